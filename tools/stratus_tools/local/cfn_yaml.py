"""Load CloudFormation/SAM YAML templates, turning short-form tags (!Ref, !Sub, ...) into long forms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# Short tag -> long-form key. Every tag maps to {"Fn::X": value} except !Ref and !Condition.
_TAGS: dict[str, str] = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "And",
            "Base64",
            "Cidr",
            "Equals",
            "FindInMap",
            "GetAZs",
            "GetAtt",
            "If",
            "ImportValue",
            "Join",
            "Not",
            "Or",
            "Select",
            "Split",
            "Sub",
            "Transform",
            "ToJsonString",
            "Length",
        )
    },
}


class CfnLoader(yaml.SafeLoader):
    """A safe YAML loader that understands CloudFormation's short-form intrinsic functions."""


# CloudFormation reads "2010-09-09" as a string, not a date: drop the implicit timestamp resolver.
CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct(loader: yaml.SafeLoader, node: yaml.Node, tag: str) -> dict[str, Any]:
    key = _TAGS[tag]
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag == "GetAtt":
            # "!GetAtt Res.Attr.Sub" splits at the first dot only: attributes may hold dots.
            resource, _, attribute = str(value).partition(".")
            value = [resource, attribute]
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {key: value}


def _register() -> None:
    for tag in _TAGS:

        def constructor(loader: yaml.SafeLoader, node: yaml.Node, tag: str = tag) -> dict[str, Any]:
            return _construct(loader, node, tag)

        CfnLoader.add_constructor(f"!{tag}", constructor)


_register()


def loads_template(text: str) -> dict[str, Any]:
    """Parse template text into plain dicts, with intrinsic functions in their long form."""
    data = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - CfnLoader derives from SafeLoader
    if not isinstance(data, dict):
        raise ValueError("a CloudFormation template must be a mapping at the top level")
    return data


def load_template(path: str | Path) -> dict[str, Any]:
    """Read and parse a CloudFormation/SAM template file."""
    return loads_template(Path(path).read_text(encoding="utf-8"))
