import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_states_doc_is_generated_from_the_enums() -> None:
    spec = importlib.util.spec_from_file_location("states_doc", ROOT / "scripts" / "states_doc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "states.md").read_text() == module.render(), (
        "docs/states.md is stale: run `python scripts/states_doc.py`")
