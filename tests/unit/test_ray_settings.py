"""What the Ray provider sends its node agents: settings without a secret."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from batchyard.errors import BatchyardError
from batchyard.onray.provider import check_object_store, secretless
from batchyard.settings import Settings


def test_node_agents_get_the_settings_without_any_secret(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, provider="ray", buckets={"b": "s3://b"},
                        s3_endpoint_url="http://127.0.0.1:1", s3_access_key_id="KEYID-XYZ",
                        s3_secret_access_key="very-secret-value")
    fields = secretless(settings)
    sent = pickle.dumps(fields)  # what Ray stores and shows of the actor's arguments
    assert b"very-secret-value" not in sent and b"KEYID-XYZ" not in sent
    assert fields["s3_endpoint_url"] == "http://127.0.0.1:1"
    assert fields["buckets"] == {"b": "s3://b"}
    rebuilt = Settings(**fields)  # a node fills the secrets in from its environment
    assert rebuilt.s3_secret_access_key.get_secret_value() == ""


@pytest.mark.parametrize("buckets", [{}, {"data": "/srv/data"}, {"a": "s3://a", "b": "/x"}])
def test_the_ray_provider_refuses_buckets_only_the_server_reaches(
        tmp_path: Path, buckets: dict[str, str]) -> None:
    settings = Settings(data_dir=tmp_path, provider="ray", buckets=buckets)
    with pytest.raises(BatchyardError, match="every node can reach") as refused:
        check_object_store(settings, shared=False)
    assert "shared_object_root" in str(refused.value)
    check_object_store(settings, shared=True)  # declared mounted on every node


def test_s3_buckets_pass(tmp_path: Path) -> None:
    check_object_store(Settings(data_dir=tmp_path, buckets={"a": "s3://a", "b": "oss://b"}),
                       shared=False)
