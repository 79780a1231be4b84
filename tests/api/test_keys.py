"""Access keys: the KeyStore, the master key file, and `batchyard keys …`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchyard.adapters.credentials import CredentialError, KeyStore, master_key, open_database
from batchyard.cli.keys import keys_app
from batchyard.errors import NotFound


def key_store(data_dir: Path) -> KeyStore:
    return KeyStore(open_database(f"sqlite:///{data_dir / 'batchyard.db'}"), master_key(data_dir))


def test_create_list_revoke(tmp_path: Path) -> None:
    store = key_store(tmp_path)
    first = store.create("alice", "laptop")
    second = store.create("bob")
    assert first.id != second.id and len(first.secret) >= 30 and first.id.startswith("BY")
    assert [key.id for key in store.list()] == [first.id, second.id]
    assert [key.id for key in store.list("bob")] == [second.id]
    assert all(key.secret == "" for key in store.list())
    looked_up = store.lookup(first.id)
    assert looked_up is not None and looked_up.secret == first.secret and looked_up.active
    assert not store.revoke(first.id).active
    assert store.lookup("BYNOPE") is None
    with pytest.raises(NotFound):
        store.revoke("BYNOPE")
    assert first.secret not in repr(first)


def test_tenant_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(CredentialError):
        key_store(tmp_path).create("no spaces")


def test_master_key_is_private_and_reused(tmp_path: Path) -> None:
    store = key_store(tmp_path)
    key = store.create("alice")
    path = tmp_path / "master.key"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = key_store(tmp_path).lookup(key.id)
    assert again is not None and again.secret == key.secret
    os.chmod(path, 0o644)
    with pytest.raises(CredentialError, match="chmod 600"):
        master_key(tmp_path)


def test_a_different_master_key_cannot_read_secrets(tmp_path: Path) -> None:
    key = key_store(tmp_path).create("alice")
    (tmp_path / "master.key").unlink()
    with pytest.raises(CredentialError, match="another master key"):
        key_store(tmp_path).lookup(key.id)


def test_the_keys_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    where = ["--data-dir", str(tmp_path)]
    created = runner.invoke(keys_app, ["create", "--tenant", "alice", "--json", *where])
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)
    assert key["Tenant"] == "alice" and key["AccessKeySecret"]
    listed = runner.invoke(keys_app, ["list", "--json", *where])
    assert [item["AccessKeyId"] for item in json.loads(listed.stdout)] == [key["AccessKeyId"]]
    assert key["AccessKeySecret"] not in listed.stdout
    revoked = runner.invoke(keys_app, ["revoke", key["AccessKeyId"], *where])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert json.loads(runner.invoke(keys_app, ["list", "--json", *where]).stdout)[0]["Revoked"]
    assert runner.invoke(keys_app, ["revoke", "BYNOPE", *where]).exit_code == 1
    assert runner.invoke(keys_app, ["create", "--tenant", "a b", *where]).exit_code == 2
    table = runner.invoke(keys_app, ["list", *where])
    assert key["AccessKeyId"] in table.stdout


def test_create_prints_lines_to_paste_into_a_shell(tmp_path: Path) -> None:
    created = CliRunner().invoke(keys_app, ["create", "--tenant", "default",
                                            "--data-dir", str(tmp_path)])
    assert created.exit_code == 0, created.output
    line = created.stdout.strip()
    assert re.fullmatch(r"export BATCHYARD_KEY_ID=BY[A-Z0-9]{18} "
                        r"BATCHYARD_KEY_SECRET=[\w-]{20,}", line), line
    assert "never shown again" in created.stderr and "default" in created.stderr
    key_id = line.split()[1].partition("=")[2]
    secret = line.split()[2].partition("=")[2]
    found = key_store(tmp_path).lookup(key_id)
    assert found is not None and found.secret == secret and found.tenant == "default"
