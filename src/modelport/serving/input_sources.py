"""Which named values feed which of a model's inputs: the rules tables and records share.

A table's columns (serving.table_mapping) and a record's fields (serving.record_mapping) feed a
model the same way, in this order of preference:

- features: a model with a single `[-1, F]` input takes F values, in the order `features`
  gives (`--features`);
- named: every input is named by a column or field (one value per row for a `[-1]` or
  `[-1, 1]` input, a list of values for a `[-1, F]` input);
- recorded: a single `[-1, F]` input takes F values in the order the version's reference
  profile recorded (the columns of the reference data it was pushed with); without it the
  mapping is ambiguous and refused.

Only the names are resolved here, before any value is read; each mapping converts the values.
No pyarrow: a stream consumer of records imports none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from modelport.errors import InvalidInput
from modelport.protocol.signature import TensorSpec
from modelport.registry.manifest import ModelVersion

_SHOWN: Final = 20
"""How many of the names found a refusal lists."""


@dataclass(frozen=True, slots=True)
class Wording:
    """How refusals name what feeds the inputs: a table's columns, or a record's fields."""

    item: str
    """One of them: "column" or "field"."""
    holder: str
    """What holds them: "the table" or "the record"."""


COLUMNS: Final = Wording("column", "the table")
FIELDS: Final = Wording("field", "the record")


@dataclass(frozen=True, slots=True)
class InputSource:
    """Where one input's values come from: one column per row value, or F feature columns."""

    spec: TensorSpec
    columns: tuple[str, ...]
    """The column (or field) feeding the input, or its F feature columns in order."""
    stacked: bool
    """True: `columns` are the F features of a `[-1, F]` input; False: one column."""


def resolve_sources(
    version: ModelVersion,
    names: Sequence[str],
    features: Sequence[str] | None = None,
    wording: Wording = COLUMNS,
) -> tuple[InputSource, ...]:
    """Resolve how the columns (or fields) `names` feed `version`'s inputs, by the rules above.

    InvalidInput says what to change; missing names are listed with the names found.
    """
    inputs = version.signature.inputs
    present = set(names)
    if features is not None:
        sources: tuple[InputSource, ...] = (
            feature_source(inputs, tuple(features), "--features", wording),
        )
    elif inputs and all(s.name in present for s in inputs):
        sources = tuple(named_source(s, wording) for s in inputs)
    elif len(inputs) == 1 and len(inputs[0].shape) == 2:
        recorded = recorded_features(version, inputs[0].name)
        if not recorded:
            item = wording.item
            raise InvalidInput(
                f"cannot tell which {item}s feed input {describe(inputs[0])}: its "
                f"version records no feature order (it was pushed without reference "
                f"data) and no {item} is named like the input; pass --features a,b,c "
                f"(the {item}s in the model's feature order). {found(names, wording)}"
            )
        sources = (feature_source(inputs, recorded, "the reference data's features", wording),)
    else:
        missing = [s.name for s in inputs if s.name not in present]
        raise InvalidInput(
            f"missing {wording.item}(s) {', '.join(map(repr, missing))} for the model's inputs "
            f"({', '.join(map(describe, inputs))}); {found(names, wording)}"
        )
    wanted = [c for source in sources for c in source.columns]
    missing = [c for c in dict.fromkeys(wanted) if c not in present]
    if missing:
        raise InvalidInput(
            f"missing {wording.item}(s) {', '.join(map(repr, missing))}; {found(names, wording)}"
        )
    return sources


def recorded_features(version: ModelVersion, input_name: str) -> tuple[str, ...]:
    """The feature names, in column order, the version's reference profile records for an input."""
    profile = version.reference_profile or {}
    found: list[tuple[int, str]] = []
    for feature in profile.get("features", []):
        column = feature.get("column")
        if feature.get("input") == input_name and isinstance(column, int):
            found.append((column, str(feature.get("name"))))
    found.sort()
    # Only a complete 0..F-1 record is an order; anything else is ambiguous.
    if [i for i, _ in found] != list(range(len(found))):
        return ()
    return tuple(name for _, name in found)


def feature_source(
    inputs: Sequence[TensorSpec],
    features: tuple[str, ...],
    what: str,
    wording: Wording = COLUMNS,
) -> InputSource:
    """The single `[-1, F]` input of `inputs` fed by `features` (`what` names where they came
    from); InvalidInput when the model has no such input or the count is wrong."""
    item = wording.item
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        takes = ", ".join(map(describe, inputs)) or "none"
        raise InvalidInput(
            f"--features applies to a model with one [-1, F] input; this one takes: {takes} "
            f"(name each input's {item} after it instead)"
        )
    spec = inputs[0]
    if not features:
        raise InvalidInput(f"--features needs at least one {item} name")
    if len(set(features)) != len(features):
        raise InvalidInput(f"{what} name(s) a {item} twice: {', '.join(features)}")
    width = spec.shape[1]
    if width >= 0 and width != len(features):
        raise InvalidInput(
            f"input {describe(spec)} takes {width} feature {item}(s); {what} gives "
            f"{len(features)}: {', '.join(features)}"
        )
    return InputSource(spec, features, stacked=True)


def named_source(spec: TensorSpec, wording: Wording = COLUMNS) -> InputSource:
    """The input `spec` fed by the column (or field) of its own name."""
    if len(spec.shape) == 0 or len(spec.shape) > 2:
        holder = wording.holder.removeprefix("the ")
        raise InvalidInput(
            f"input {describe(spec)} cannot be read from a {holder} {wording.item}; a "
            f"{holder} feeds inputs of shape [-1], [-1, 1] or [-1, F]"
        )
    return InputSource(spec, (spec.name,), stacked=False)


def describe(spec: TensorSpec) -> str:
    """An input as refusals name it: 'name' DATATYPE [shape]."""
    return f"{spec.name!r} {spec.datatype} {list(spec.shape)}"


def found(names: Sequence[str], wording: Wording = COLUMNS) -> str:
    """What the table (or record) has, for a refusal: its first names and how many."""
    shown = ", ".join(map(repr, names[:_SHOWN]))
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{wording.holder} has {len(names)} {wording.item}(s): {shown or 'none'}{more}"
