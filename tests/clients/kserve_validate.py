"""Validate KServe objects strictly against the kserve SDK's own models; one line per document.

Runs in the clients' venv (kserve is not in modelport's): `python kserve_validate.py [FILE]`
reads a YAML or JSON stream of documents from FILE or stdin. Each ClusterServingRuntime,
ServingRuntime and InferenceService is built into its SDK model by walking the models'
`openapi_types` / `attribute_map` (kserve's own, and the kubernetes client's V1* models they
reference): an unknown key, a value of the wrong type or a missing required field (kserve's
constructors' client-side validation; the kubernetes models' pydantic fields) is a problem,
named by its path. Types are the SDK's: a resource quantity is a string there, so quote it.
A few facts KServe relies on are checked on top. Documents outside serving.kserve.io are
skipped. Prints `ok KIND/NAME` or `invalid KIND/NAME: PROBLEM; ...` per document and exits 1
when any document is invalid or none is a KServe object (2 when the input cannot be read).
"""

from __future__ import annotations

import datetime
import re
import sys
from typing import Any

import kserve.models
import kubernetes.client.models
import pydantic
import yaml  # a dependency of the kubernetes client
from kserve.constants import constants

V1ALPHA1, V1BETA1 = constants.KSERVE_V1ALPHA1, constants.KSERVE_V1BETA1
MODELS = {
    (V1ALPHA1, "ClusterServingRuntime"): kserve.models.V1alpha1ClusterServingRuntime,
    (V1ALPHA1, "ServingRuntime"): kserve.models.V1alpha1ServingRuntime,
    (V1BETA1, constants.KSERVE_KIND_INFERENCESERVICE): kserve.models.V1beta1InferenceService,
}
RUNTIME_KINDS = {"ClusterServingRuntime", "ServingRuntime"}
# The SDK documents protocolVersions / protocolVersion as "v1 or v2 or grpc-v1 or grpc-v2";
# its PredictorProtocol enum (what the Python server speaks) is a subset, which a newer SDK
# that adds one would break here.
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
assert {p.value for p in constants.PredictorProtocol} <= PROTOCOLS

# kserve's generated models spell collections list[X] / dict(str, X); the kubernetes client's
# (pydantic models in this release) spell them List[X] / Dict[str, X].
LIST = re.compile(r"[lL]ist\[(.+)\]$")
DICT = re.compile(r"dict\(str, (.+)\)$|Dict\[str, (.+)\]$")
REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")
PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    # YAML reads an unquoted timestamp as a datetime.
    "datetime": (str, datetime.datetime),
    "date": (str, datetime.date),
    "ResourceQuantity": (str, int, float),
}
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def join(path: str, key: str) -> str:
    step = key if KEY.match(key) else f"[{key!r}]"
    if not path:
        return step
    return f"{path}{step}" if step.startswith("[") else f"{path}.{step}"


def model_class(name: str) -> Any:
    for module in (kserve.models, kubernetes.client.models):
        cls = getattr(module, name, None)
        if cls is not None:
            return cls
    raise LookupError(f"the SDK names a type it does not define: {name}")


def type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def build(value: Any, kind: str, path: str, problems: list[str]) -> Any:
    """`value` as the SDK type `kind`; each problem found is appended with its path."""
    if value is None or kind == "object":
        return value
    if match := LIST.match(kind):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list ({kind}), got {type_name(value)}")
            return None
        return [build(v, match[1], f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if match := DICT.match(kind):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object ({kind}), got {type_name(value)}")
            return None
        item = match[1] or match[2]
        return {k: build(v, item, join(path, str(k)), problems) for k, v in value.items()}
    if kind in PRIMITIVES:
        # bool is an int in Python, not in JSON.
        if not isinstance(value, PRIMITIVES[kind]) or (kind != "bool" and isinstance(value, bool)):
            problems.append(f"{path}: expected {kind}, got {type_name(value)} {value!r}")
        return value
    return build_model(value, model_class(kind), path, problems)


def build_model(value: Any, cls: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object ({cls.__name__}), got {type_name(value)}")
        return None
    start = len(problems)
    attributes = {key: attr for attr, key in cls.attribute_map.items()}
    kwargs: dict[str, Any] = {}
    broken: set[str] = set()
    for key, sub in value.items():
        attr = attributes.get(key)
        if attr is None:
            problems.append(f"{join(path, str(key))}: unknown field (not in {cls.__name__})")
            continue
        before = len(problems)
        kwargs[attr] = build(sub, cls.openapi_types[attr], join(path, key), problems)
        if len(problems) > before:
            broken.add(attr)
    if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
        return build_pydantic(value, cls, path, kwargs, len(problems) > start, problems)
    # The constructor's client-side validation names one missing required field at a time;
    # a field already reported as wrong is not reported again as missing.
    while True:
        try:
            return cls(**kwargs)
        except ValueError as error:
            missing = REQUIRED.match(str(error))
            if missing is None:
                problems.append(f"{path or '<root>'}: {cls.__name__}: {error}")
                return None
            attr = missing[1]
            if attr not in broken:
                where = join(path, cls.attribute_map[attr])
                problems.append(f"{where}: required field is missing ({cls.__name__})")
            broken.add(attr)
            kwargs[attr] = value.get(cls.attribute_map[attr], "<missing>")


def build_pydantic(
    value: dict[str, Any],
    cls: type[pydantic.BaseModel],
    path: str,
    kwargs: dict[str, Any],
    reported: bool,
    problems: list[str],
) -> Any:
    """A kubernetes client model: its fields say what is required, and it validates itself."""
    before = len(problems)
    for attr, field in cls.model_fields.items():
        if field.is_required() and attr not in kwargs:
            where = join(path, cls.attribute_map[attr])  # type: ignore[attr-defined]
            problems.append(f"{where}: required field is missing ({cls.__name__})")
    if reported or len(problems) > before:
        return None
    try:
        # Anything the walk above let through (the models' own validators) is still caught.
        return cls.model_validate(value)
    except pydantic.ValidationError as error:
        for e in error.errors():
            where = path
            for step in e["loc"]:
                where = f"{where}[{step}]" if isinstance(step, int) else join(where, str(step))
            problems.append(f"{where}: {e['msg']} ({cls.__name__})")
        return None


def items(spec: dict[str, Any], key: str) -> list[Any]:
    """spec[key] when it is a list (a wrong type is already reported by build)."""
    value = spec.get(key)
    return value if isinstance(value, list) else []


def name_of(doc: dict[str, Any]) -> Any:
    metadata = doc.get("metadata")
    return metadata.get("name") if isinstance(metadata, dict) else None


def check_runtime(doc: dict[str, Any], problems: list[str]) -> None:
    spec = doc.get("spec") or {}
    if spec.get("containers") == []:
        problems.append("spec.containers: a runtime needs at least one container")
    names = []
    for i, fmt in enumerate(items(spec, "supportedModelFormats")):
        name = fmt.get("name") if isinstance(fmt, dict) else None
        if not name:
            problems.append(f"spec.supportedModelFormats[{i}].name: a model format needs a name")
        elif name in names:
            problems.append(f"spec.supportedModelFormats[{i}].name: {name!r} is listed twice")
        names.append(name)
    for i, version in enumerate(items(spec, "protocolVersions")):
        if isinstance(version, str) and version not in PROTOCOLS:
            problems.append(
                f"spec.protocolVersions[{i}]: {version!r} is not one of {sorted(PROTOCOLS)}"
            )


def check_inference_service(
    doc: dict[str, Any], runtimes: dict[str, dict[str, Any]], problems: list[str]
) -> None:
    model = ((doc.get("spec") or {}).get("predictor") or {}).get("model")
    if not isinstance(model, dict):
        return
    model_format = model.get("modelFormat")
    fmt = model_format.get("name") if isinstance(model_format, dict) else None
    if isinstance(model_format, dict) and not fmt:
        problems.append("spec.predictor.model.modelFormat.name: the model format needs a name")
    protocol = model.get("protocolVersion")
    if isinstance(protocol, str) and protocol not in PROTOCOLS:
        problems.append(
            f"spec.predictor.model.protocolVersion: {protocol!r} is not one of {sorted(PROTOCOLS)}"
        )
    runtime = runtimes.get(model.get("runtime", ""))
    if runtime is None:
        return
    spec = runtime.get("spec") or {}
    formats = [f.get("name") for f in items(spec, "supportedModelFormats") if isinstance(f, dict)]
    if fmt and fmt not in formats:
        problems.append(
            f"spec.predictor.model.modelFormat.name: runtime {model['runtime']!r} does not "
            f"support {fmt!r} (it supports {formats})"
        )
    if isinstance(protocol, str) and protocol not in items(spec, "protocolVersions"):
        problems.append(
            f"spec.predictor.model.protocolVersion: runtime {model['runtime']!r} does not "
            f"speak {protocol!r}"
        )


def validate(doc: Any, runtimes: dict[str, dict[str, Any]]) -> tuple[str, list[str]] | None:
    """(label, problems) for a KServe document; None for one outside serving.kserve.io."""
    if not isinstance(doc, dict):
        return f"<{type_name(doc)}>", ["a document must be an object"]
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if not str(api_version).startswith(constants.KSERVE_GROUP + "/"):
        return None
    name = name_of(doc)
    label = f"{kind}/{name or '<unnamed>'}"
    cls = MODELS.get((api_version, kind))
    if cls is None:
        known = ", ".join(f"{v} {k}" for v, k in MODELS)
        return label, [f"apiVersion/kind: {api_version} {kind} is not one of: {known}"]
    problems: list[str] = []
    build_model(doc, cls, "", problems)
    if not name:
        problems.append("metadata.name: a KServe object needs a name")
    if kind in RUNTIME_KINDS:
        check_runtime(doc, problems)
    else:
        check_inference_service(doc, runtimes, problems)
    return label, problems


def main(argv: list[str]) -> int:
    try:
        if len(argv) > 1:
            with open(argv[1], encoding="utf-8") as f:
                text = f.read()
        else:
            text = sys.stdin.read()
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (OSError, yaml.YAMLError) as error:
        print(f"cannot read the documents: {error}", file=sys.stderr)
        return 2
    # An InferenceService is checked against a runtime of the same stream that it names.
    runtimes = {
        name_of(d): d for d in docs if isinstance(d, dict) and d.get("kind") in RUNTIME_KINDS
    }
    checked = failed = 0
    for doc in docs:
        result = validate(doc, runtimes)
        if result is None:
            print(f"skip {doc.get('kind')}/{name_of(doc)}: not a KServe object")
            continue
        label, problems = result
        checked += 1
        if problems:
            failed += 1
            print(f"invalid {label}: " + "; ".join(problems))
        else:
            print(f"ok {label}")
    if checked == 0:
        print("no KServe documents in the input", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
