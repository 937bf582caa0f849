import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


@pytest.fixture
def h100_yaml() -> dict:
    return yaml.safe_load((ROOT / "hardware" / "h100-sxm.yaml").read_text())


@pytest.fixture
def write_hw(tmp_path):
    """Write a (mutated) hardware profile as <id>.yaml in a temp folder and return its path."""

    def write(doc: dict) -> Path:
        path = tmp_path / f"{doc['id']}.yaml"
        path.write_text(yaml.safe_dump(copy.deepcopy(doc)))
        return path

    return write


def one_line_error(r, code=2):
    """A CLI result that failed as bad input should: exit ``code``, one ``error:`` line on stderr, no traceback;
    returns that line."""
    assert r.exit_code == code, (r.exit_code, r.output)
    err = r.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    return err
