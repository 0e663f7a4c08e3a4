"""The JSON Schema of a pipeline file, built from the spec's pydantic models and the installed tools'
option models, so an editor can complete and check ``pipeline.yaml`` (``agent-etl schema``).

Each step's options are added per tool: ``if {tool: csv} then {csv's options}``, which editors
(the YAML language server of VS Code, JetBrains) follow. Tools whose extra is not installed are
still accepted by name, without their options. Quality checks are listed by name with their
summary; their options are left open (many take a shorthand list or a mapping).
"""

from __future__ import annotations

import copy
from typing import Any

_FAMILIES = {"ExtractStep": "extractor", "TransformStep": "transform", "LoadStep": "loader"}


def json_schema(registry: Any = None) -> dict[str, Any]:
    from agent_etl.spec import Spec
    from agent_etl.tools.registry import MissingExtra, default_registry

    registry = registry or default_registry()
    schema = Spec.model_json_schema()
    defs = schema.setdefault("$defs", {})
    for model, family in _FAMILIES.items():
        step = defs[model]
        if model != "TransformStep":  # extract and load steps are named by their key
            step["required"] = [r for r in step.get("required", []) if r != "name"]
            step["properties"].pop("name", None)
        names = registry.names(family)
        step["properties"]["tool"] = {"type": "string", "enum": names, "description": f"the {family} to run"}
        branches, descriptions = [], []
        for name in names:
            try:
                cls = registry.get(family, name)
            except MissingExtra:  # options unknown here: accept any
                branches.append({"if": {"properties": {"tool": {"const": name}}, "required": ["tool"]},
                                 "then": {"patternProperties": {"": {}}}})
                continue
            options = _inline(cls.Config.model_json_schema(), f"{family}.{name}.", defs)
            then: dict[str, Any] = {"properties": options.get("properties", {})}
            if options.get("required"):
                then["required"] = options["required"]
            branches.append({"if": {"properties": {"tool": {"const": name}}, "required": ["tool"]}, "then": then})
            descriptions.append(cls.summary())
        if branches:
            step["allOf"] = branches
            step.pop("additionalProperties", None)  # the model allows extras: they are the options
            step["unevaluatedProperties"] = False  # a misspelt option is flagged, as validate does
        if len(descriptions) == len(names):  # VS Code shows them next to the completions
            step["properties"]["tool"]["markdownEnumDescriptions"] = descriptions
    checks = {}
    for name in registry.names("validator"):
        try:
            summary = registry.get("validator", name).summary()
        except MissingExtra as e:
            summary = str(e)
        checks[name] = {"description": summary}
    group = defs["QualityGroup"]
    group["properties"]["checks"]["items"] = {"type": "object", "properties": checks, "minProperties": 1,
                                              "maxProperties": 1, "additionalProperties": False,
                                              "description": "one check: `- not_null: [id]`"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "agent-etl pipeline", **schema}


def _inline(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its own ``$defs`` moved into ``defs`` under names that start with ``prefix``."""
    schema = copy.deepcopy(schema)
    own = schema.pop("$defs", {})

    def rename(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = "#/$defs/" + prefix + ref.removeprefix("#/$defs/")
            for v in node.values():
                rename(v)
        elif isinstance(node, list):
            for v in node:
                rename(v)
        return node

    for key, value in own.items():
        defs[prefix + key] = rename(value)
    return rename(schema)
