"""The CloudFormation YAML loader turns short-form tags into their long forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratus_tools.local.cfn_yaml import load_template, loads_template


def test_scalar_tags_become_long_forms() -> None:
    # Given a template using scalar short forms
    text = """
A: !Ref Bucket
B: !GetAtt Queue.Arn
C: !Sub "${AWS::StackName}-docs"
D: !Base64 hello
E: !GetAZs ""
F: !ImportValue shared-vpc
G: !Condition IsProd
H: !GetAtt Db.Endpoint.Address
"""
    # When it is loaded
    data = loads_template(text)
    # Then each tag is its long form; GetAtt splits at the first dot only
    assert data == {
        "A": {"Ref": "Bucket"},
        "B": {"Fn::GetAtt": ["Queue", "Arn"]},
        "C": {"Fn::Sub": "${AWS::StackName}-docs"},
        "D": {"Fn::Base64": "hello"},
        "E": {"Fn::GetAZs": ""},
        "F": {"Fn::ImportValue": "shared-vpc"},
        "G": {"Condition": "IsProd"},
        "H": {"Fn::GetAtt": ["Db", "Endpoint.Address"]},
    }


def test_sequence_tags_nest() -> None:
    # Given nested sequence forms
    text = """
If: !If [HasTopic, [!Ref Topic], !Ref AWS::NoValue]
Eq: !Not [!Equals [!Ref Topic, ""]]
AndOr: !And [!Condition A, !Or [!Condition B, !Condition C]]
Join: !Join [",", [a, !Ref B]]
Sel: !Select [0, !Split [",", "a,b"]]
Map: !FindInMap [Regions, !Ref AWS::Region, Ami]
Cidr: !Cidr ["10.0.0.0/16", 4, 8]
SubList: !Sub ["${Name}-x", {Name: !Ref N}]
GetAttList: !GetAtt [Queue, Arn]
"""
    # When it is loaded
    data = loads_template(text)
    # Then inner tags are converted too
    assert data["If"] == {"Fn::If": ["HasTopic", [{"Ref": "Topic"}], {"Ref": "AWS::NoValue"}]}
    assert data["Eq"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "Topic"}, ""]}]}
    assert data["AndOr"] == {
        "Fn::And": [{"Condition": "A"}, {"Fn::Or": [{"Condition": "B"}, {"Condition": "C"}]}]
    }
    assert data["Join"] == {"Fn::Join": [",", ["a", {"Ref": "B"}]]}
    assert data["Sel"] == {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]}
    assert data["Map"] == {"Fn::FindInMap": ["Regions", {"Ref": "AWS::Region"}, "Ami"]}
    assert data["Cidr"] == {"Fn::Cidr": ["10.0.0.0/16", 4, 8]}
    assert data["SubList"] == {"Fn::Sub": ["${Name}-x", {"Name": {"Ref": "N"}}]}
    assert data["GetAttList"] == {"Fn::GetAtt": ["Queue", "Arn"]}


def test_dates_stay_strings_and_long_forms_pass_through() -> None:
    # Given a version date and an already long-form function
    text = 'AWSTemplateFormatVersion: 2010-09-09\nX: {"Fn::Sub": "a"}\n'
    # When it is loaded
    data = loads_template(text)
    # Then the date is the string CloudFormation reads, and long forms are untouched
    assert data == {"AWSTemplateFormatVersion": "2010-09-09", "X": {"Fn::Sub": "a"}}


def test_unknown_tags_and_non_mappings_are_rejected() -> None:
    # Given text with a tag CloudFormation does not know, and text that is not a mapping
    # When they are loaded / Then both fail loudly
    with pytest.raises(Exception, match="!Bogus"):
        loads_template("A: !Bogus x\n")
    with pytest.raises(ValueError, match="mapping"):
        loads_template("- a\n- b\n")


def test_load_template_reads_a_file(tmp_path: Path) -> None:
    # Given a template file
    path = tmp_path / "t.yaml"
    path.write_text("Resources:\n  Q:\n    Type: AWS::SQS::Queue\nOutputs:\n  U:\n    Value: !Ref Q\n")
    # When it is loaded from its path
    data = load_template(path)
    # Then it is the parsed mapping
    assert data["Outputs"]["U"]["Value"] == {"Ref": "Q"}
