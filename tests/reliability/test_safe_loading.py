"""No code path unpickles untrusted data: weights are safetensors, state is JSON, torch files use weights_only."""

import json
import pickle
import re
from pathlib import Path

import pytest

from transferlab.errors import TransferlabError
from transferlab.experiment import train
from transferlab.models import create_backbone

from conftest import tiny_config

SRC = Path(__file__).resolve().parents[2] / "src" / "transferlab"


class Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('owned')",))


def test_a_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"conv.0.weight": Exploit()}, handle)
    with pytest.raises(TransferlabError, match="refusing to load .*evil.pt"):
        create_backbone("lenet", in_channels=1, image_size=28, pretrained=str(tmp_path / "evil.pt"))
    assert not (tmp_path / "PWNED").exists()



def test_a_run_folder_holds_only_safetensors_and_json(tmp_path):
    train(tiny_config("adda", iterations=4, train={"checkpoint_every": 2}), tmp_path / "run", progress=False)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert path.suffix in (".safetensors", ".json", ".jsonl") or path.name in ("LATEST", ".lock"), path
        data = path.read_bytes()
        if path.suffix == ".safetensors":  # an 8-byte header length (any first byte, 0x80 included), then JSON
            header = int.from_bytes(data[:8], "little")
            assert data[8:9] == b"{" and json.loads(data[8:8 + header]) is not None, f"{path} is not safetensors"
        else:
            assert not data.startswith(b"\x80"), f"{path} looks like a pickle"  # pickle protocol 2+


def test_no_unsafe_deserialisation_in_the_library():
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for line_no, line in enumerate(text.splitlines(), 1):
            if re.search(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|\bdill\b", line):
                offenders.append(f"{path.name}:{line_no}: {line.strip()}")
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.name}:{line_no}: {line.strip()}")
    assert not offenders, "unsafe loading:\n" + "\n".join(offenders)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"\xff" * 64, b"PK\x03\x04 a zip, not safetensors"])
def test_a_corrupt_safetensors_weights_file_is_a_clear_error(tmp_path, content):
    from transferlab.errors import TransferlabError
    from transferlab.models import create_backbone

    path = tmp_path / "lenet.safetensors"
    path.write_bytes(content)
    with pytest.raises(TransferlabError, match="is not a readable safetensors file.*Download or convert it again"):
        create_backbone("lenet", in_channels=1, image_size=28, pretrained=str(path))
