"""Reading catalogue files (CSV and JSON lines) and the errors a bad one gets."""

from pathlib import Path

import pytest

from engine.offline.data import read_catalog
from schemas.records import Item


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_attributes_column(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "items.csv",
        "item_id,title,text,attributes\n"
        'i1,Bridges,"Old, stone ones.","{""tags"": [""a"", ""b""], ""year"": 1900}"\n'
        "i2,Rivers,,\n",
    )
    assert read_catalog(p) == [
        Item("i1", "Bridges", "Old, stone ones.", {"tags": ["a", "b"], "year": 1900}),
        Item("i2", "Rivers", "", {}),
    ]


def test_csv_extra_columns_are_attributes(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "items.csv",
        "item_id,title,text,tags,lang,brand\ni1,Bridges,Stone,a|b,en,\ni2,Rivers,,solo,,acme\n",
    )
    assert read_catalog(p) == [
        Item("i1", "Bridges", "Stone", {"tags": ["a", "b"], "lang": "en"}),
        Item("i2", "Rivers", "", {"tags": "solo", "brand": "acme"}),
    ]


def test_jsonl(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "items.jsonl",
        '{"item_id": 7, "title": "Bridges", "text": "Stone", "attributes": {"tags": ["a"]}}\n'
        "\n"
        '{"item_id": "i2", "title": "Rivers"}\n',
    )
    assert read_catalog(p) == [
        Item("7", "Bridges", "Stone", {"tags": ["a"]}),
        Item("i2", "Rivers", "", {}),
    ]


@pytest.mark.parametrize("name", ["items.csv", "items.jsonl"])
def test_duplicate_id_replaced(tmp_path: Path, name: str) -> None:
    if name.endswith(".csv"):
        text = "item_id,title\ni1,Old\ni2,Other\ni1,New\n"
    else:
        text = '{"item_id": "i1", "title": "Old"}\n{"item_id": "i2", "title": "Other"}\n'
        text += '{"item_id": "i1", "title": "New"}\n'
    items = read_catalog(_write(tmp_path / name, text))
    assert [(i.item_id, i.title) for i in items] == [("i2", "Other"), ("i1", "New")]


def test_missing_title_names_file_and_line(tmp_path: Path) -> None:
    p = _write(tmp_path / "items.csv", "item_id,title\ni1,Bridges\ni2,\n")
    with pytest.raises(ValueError, match=r"items\.csv:3: title"):
        read_catalog(p)
    q = _write(tmp_path / "items.jsonl", '{"item_id": "i1", "title": "A"}\n{"item_id": "i2"}\n')
    with pytest.raises(ValueError, match=r"items\.jsonl:2: .*'title'"):
        read_catalog(q)


def test_missing_item_id(tmp_path: Path) -> None:
    p = _write(tmp_path / "items.csv", "item_id,title\n,Bridges\n")
    with pytest.raises(ValueError, match=r"items\.csv:2: item_id"):
        read_catalog(p)
