"""The file-system layout of one mapped attempt: what is bound where in its sandbox.

Inside the attempt folder (never visible to the program itself):

    inputs/<n>/    private writable copies of WriteSupport inputs
    outputs/<n>/   one empty folder per OutputMapping, bound at its local path
    logs/<n>/      a writable folder at the parent of a LogMapping file, when the program
                   could not write there otherwise
    tmp/           the program's /tmp

Read-only inputs are bound straight from the shared cache (see `staging`). A program that
runs as the slot's unprivileged user owns every writable folder here (and its working
directory); a confined program without mappings also gets its tenant's local bucket folders
(read-write or read-only, as the tenant may), so that `batchyard.oss` works there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from batchyard.domain.attempt import AttemptRequest, PathMapping
from batchyard.ports import ObjectStore
from batchyard.runner.logmapping import ShippedLog, shipped_log
from batchyard.runner.sandbox import Bind, SandboxPlan
from batchyard.runner.settings import RunnerSettings
from batchyard.runner.staging import private_copy, stage_input
from batchyard.runner.workspace import Workspace


@dataclass
class Layout:
    """The sandbox plan of an attempt, and where its outputs and logs are on the host."""

    plan: SandboxPlan
    outputs: list[tuple[str, PathMapping]] = field(default_factory=list)
    logs: list[ShippedLog] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """One line per staged input: what it held and whether it came from the cache."""
    wrapper: tuple[str, ...] = ()
    """The bwrap command line that builds `plan` (see `sandbox.sandbox_argv`)."""


def lay_out(request: AttemptRequest, objects: ObjectStore, settings: RunnerSettings,
            workspace: Workspace, user: tuple[int, int] | None = None) -> Layout:
    """Stage the inputs and make the folders of `request`; raises on a staging failure."""
    binds: list[Bind] = []
    notes = []
    for index, mapping in enumerate(request.inputs):
        staged = stage_input(objects, mapping.url, settings.cache_folder)
        source = staged.folder
        if mapping.writable:
            source = _folder(workspace, "inputs", index, user)
            private_copy(staged.folder, source)
            hand_over(source, user)
        binds.append(Bind(source, _clean(mapping.path), mapping.writable))
        origin = "cache" if staged.cached else "object store"
        notes.append(f"{mapping.url} -> {mapping.path}: {staged.objects} objects, "
                     f"{staged.size} bytes, from the {origin}")
    outputs = []
    for index, mapping in enumerate(request.outputs):
        folder = _folder(workspace, "outputs", index, user)
        binds.append(Bind(folder, _clean(mapping.path), writable=True))
        outputs.append((folder, mapping))
    if not request.uses_mappings:
        binds += _bucket_binds(request, objects)
    tmp = _folder(workspace, "tmp", None, user)
    confinement = settings.confinement
    plan = SandboxPlan(workdir=workspace.workdir, tmp=tmp, binds=tuple(binds),
                       hidden=settings.hidden_paths, user=user, network=confinement.network,
                       runtime=settings.runtime_paths)
    plan, logs = _log_folders(request, workspace, plan, user)
    return Layout(plan, outputs, logs, notes)


def _bucket_binds(request: AttemptRequest, objects: ObjectStore) -> list[Bind]:
    """The tenant's buckets that live in local folders, at their own path."""
    binds = []
    for bucket in request.buckets:
        folder = objects.bucket_folder(bucket.name, create=bucket.writable)
        if folder is not None and os.path.isdir(folder):
            binds.append(Bind(folder, folder, bucket.writable))
    return binds


def hand_over(path: str, user: tuple[int, int] | None) -> None:
    """Give `path` (and everything below it) to the program's user, links untouched."""
    if user is None:
        return
    uid, gid = user
    os.chown(path, uid, gid, follow_symlinks=False)
    for folder, folders, files in os.walk(path):
        for name in folders + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def _log_folders(request: AttemptRequest, workspace: Workspace, plan: SandboxPlan,
                 user: tuple[int, int] | None) -> tuple[SandboxPlan, list[ShippedLog]]:
    """Give every LogMapping file a writable folder, and say where it is on the host."""
    extra: list[Bind] = []
    logs = []
    for mapping in request.logs:
        inner = _clean(mapping.path)
        host = _plan_with(plan, extra).host_path(inner)
        if host is None:
            parent = os.path.dirname(inner)
            extra.append(Bind(_folder(workspace, "logs", len(extra), user), parent,
                              writable=True))
            host = _plan_with(plan, extra).host_path(inner)
        if host is not None:
            folder = _bind_source(_plan_with(plan, extra), inner)
            logs.append(shipped_log(host, folder, mapping.url, request.key))
    return _plan_with(plan, extra), logs


def _plan_with(plan: SandboxPlan, extra: list[Bind]) -> SandboxPlan:
    return replace(plan, binds=(*plan.binds, *extra))


def _bind_source(plan: SandboxPlan, inner: str) -> str:
    """The host folder of the writable bind holding `inner` (for the link check)."""
    host = plan.host_path(inner) or ""
    for bind in (Bind(plan.workdir, plan.workdir, True), Bind(plan.tmp, "/tmp", True),
                 *plan.binds):
        if bind.writable and host.startswith(bind.source + "/"):
            return bind.source
    return os.path.dirname(host)


def _folder(workspace: Workspace, kind: str, index: int | None,
            user: tuple[int, int] | None) -> str:
    parent = os.path.join(workspace.folder, kind)
    folder = parent if index is None else os.path.join(parent, str(index))
    os.makedirs(folder, exist_ok=True)
    if user is not None:
        os.chown(folder, *user)
        os.chmod(folder, 0o755)  # bwrap (root without capabilities) must enter it
    return folder


def _clean(path: str) -> str:
    return os.path.normpath(path)
