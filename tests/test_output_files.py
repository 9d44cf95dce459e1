"""Output files take part in the task commit: parts, renames, uncommitted tails, readers."""

from __future__ import annotations

import dataclasses

import pydantic

from gpt_batch_api.output_files import DataclassListOutputFile, DataclassOutputFile
from gpt_batch_api.store.transaction import Transaction


@dataclasses.dataclass
class Rec:
    key: str
    value: int


class Summary(pydantic.BaseModel):
    total: int
    names: list[str]


def commit(out, folder) -> dict:
    with Transaction(folder / "t_journal.json") as txn:
        return out.prepare_commit(txn)


def test_list_output_splits_into_numbered_parts_and_renames_them_on_growth(tmp_path):
    base = str(tmp_path / "t_output")
    out = DataclassListOutputFile.output_factory(Rec, max_entries=3)(base, False)
    out.open(None)
    out.extend(Rec(f"k{i}", i) for i in range(5))
    state = commit(out, tmp_path)
    assert [p["name"] for p in state["parts"]] == ["t_output_part001of002.jsonl", "t_output_part002of002.jsonl"]
    out.extend(Rec(f"k{i}", i) for i in range(5, 8))
    state = commit(out, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"t_output_part00{i}of003.jsonl" for i in (1, 2, 3)]
    assert [p["entries"] for p in state["parts"]] == [3, 3, 2]
    out.close()
    assert [r.value for r in DataclassListOutputFile.read_entries(base, Rec)] == list(range(8))


def test_list_output_drops_what_was_written_after_the_last_commit(tmp_path):
    base = str(tmp_path / "t_output")
    out = DataclassListOutputFile.output_factory(Rec, max_entries=2)(base, False)
    out.open(None)
    out.extend([Rec("a", 1), Rec("b", 2), Rec("c", 3)])
    committed = commit(out, tmp_path)
    # The next step writes output but the process dies before the task state records it.
    out.extend([Rec("d", 4), Rec("e", 5), Rec("f", 6)])
    out.prepare_commit(Transaction(tmp_path / "t_journal.json"))  # staged, never committed
    out.close()
    again = DataclassListOutputFile.output_factory(Rec, max_entries=2)(base, False)
    again.open(committed)
    assert [r.key for r in DataclassListOutputFile.read_entries(base, Rec)] == ["a", "b", "c"]
    again.append(Rec("g", 7))
    commit(again, tmp_path)
    again.close()
    assert [r.key for r in DataclassListOutputFile.read_entries(base, Rec)] == ["a", "b", "c", "g"]


def test_single_file_list_output_and_pydantic_document_output(tmp_path):
    out = DataclassListOutputFile.output_factory(Rec)(str(tmp_path / "x_output"), False)
    out.open(None)
    out.append(Rec("a", 1))
    commit(out, tmp_path)
    out.close()
    assert (tmp_path / "x_output.jsonl").read_text() == '{"key":"a","value":1}\n'
    doc = DataclassOutputFile.output_factory(Summary)(str(tmp_path / "y_output"), False)
    doc.open(None)
    doc.set(Summary(total=2, names=["a", "b"]))
    state = commit(doc, tmp_path)
    reopened = DataclassOutputFile.output_factory(Summary)(str(tmp_path / "y_output"), False)
    reopened.open(state)
    assert reopened.data == Summary(total=2, names=["a", "b"])
    assert DataclassOutputFile.read(str(tmp_path / "y_output"), Summary).total == 2
