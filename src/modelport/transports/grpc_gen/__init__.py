"""Code generated from proto/inference.proto by `make proto`; do not edit (CI diffs it)."""
