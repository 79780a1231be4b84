"""Fast-path programs born inside their slot's cgroup, so none of them runs a moment outside.

`runner.program` holds a program (a `sh` reading a pipe) while its thread moves it into the
slot's cgroup, then lets it go: one pipe, one cgroup write and one wake-up from the runner,
and a `sh` exec'd per attempt. The spawner loop needs none of that:

- **cgroup v1** lets a single thread change cgroups (its tid written to `tasks`). The loop
  thread steps into the slot's folders, spawns, and steps back: a child is born in the
  cgroups of the thread that forks it, so the program is in its cgroup before its first
  instruction — earlier than a held one, and with no helper process (a `sh` exec costs
  about 0.7 ms of CPU per attempt here, more than the agent's whole Python share). The
  thread is in the slot's folders only during the spawn; only this thread signals the
  slot's processes, and never meanwhile, so the agent is never among what it kills.
- **cgroup v2** moves whole processes only. There the program starts as `/bin/sh -c
  'echo "$$" > cgroup.procs || exit 126; …exec "$@"' sh … bash -c CommandLine`: the `sh`
  moves itself into the slot's cgroup and only then execs the program, so, as with the
  hold, nothing of the program runs before it is in its cgroup, and a `sh` that cannot
  enter exits without running it (status 126, the shell's reason in stderr).

Fast-path attempts get no limits to set: the slots of `run` without `--sandbox` have no
user, no memory or process limit (those come with the sandbox, which is the heavy path),
and `runner._launch` gives an unsandboxed attempt no disk limit — so `runner.program`'s
`_place` would set no rlimit for them either. A request's own memory limit
(`AttemptRequest.memory_bytes`, its InstanceType's) is the same: confined attempts only,
set and judged by `run_attempt` (`SlotGroup.set_memory`, `MemoryCount`); the fast path
neither writes nor reads a memory cgroup file.
"""

from __future__ import annotations

import logging
import os
import threading

from batchyard.runner.cgroups import SlotGroup

_log = logging.getLogger(__name__)

ENTER_V2 = 'echo "$$" > "$1" || exit 126; shift; exec "$@"'
"""The `sh` a v2 program starts in: into its cgroup (`$1`), then the program (`$@`)."""


class Births:
    """For the spawner loop only: the descriptors to step its thread in and out of each
    slot's v1 cgroup folders, opened once per slot."""

    def __init__(self) -> None:
        self._tid = b""
        self._doors: dict[int, tuple[list[int], list[int]]] = {}
        """By slot index: the `tasks` files of its folders, and of the folders above them
        (the agent's own cgroups, where the thread goes back to)."""

    def start(self) -> None:
        """On the loop thread: the thread id it moves."""
        self._tid = str(threading.get_native_id()).encode()

    def argv(self, group: SlotGroup | None, argv: list[str]) -> list[str]:
        """What to spawn: `argv` itself, or (cgroup v2) `argv` behind the `sh` that moves
        itself into the slot's cgroup first."""
        if group is None or group.version == 1:
            return argv
        return ["/bin/sh", "-c", ENTER_V2, "sh", str(group.tracking / "cgroup.procs"), *argv]

    def enter(self, index: int, group: SlotGroup | None) -> list[int]:
        """Step the loop thread into the slot's v1 folders; the descriptors to `leave` by.
        Raises OSError (the thread is back where it was) if that is refused."""
        if group is None or group.version != 1:
            return []
        doors = self._doors.get(index) or self._open(index, group)
        inside, home = doors
        try:
            for descriptor in inside:
                os.write(descriptor, self._tid)
        except BaseException:
            self.leave(home)
            raise
        return home

    def leave(self, home: list[int]) -> None:
        """Step the thread back into the agent's own cgroups (nothing if it never left)."""
        for descriptor in home:
            try:
                os.write(descriptor, self._tid)
            except OSError:  # only if the hierarchy went away under the agent
                _log.critical("the agent's spawner cannot leave a slot's cgroup: a kill of "
                              "that slot would kill the agent too", exc_info=True)

    def close(self) -> None:
        for inside, home in self._doors.values():
            for descriptor in (*inside, *home):
                os.close(descriptor)
        self._doors.clear()

    def _open(self, index: int, group: SlotGroup) -> tuple[list[int], list[int]]:
        inside: list[int] = []
        home: list[int] = []
        try:
            for folder in group.folders:  # <own cgroup>/batchyard-<tag>/slot-<n>
                inside.append(os.open(folder / "tasks", os.O_WRONLY | os.O_CLOEXEC))
                home.append(os.open(folder.parent.parent / "tasks", os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            for descriptor in (*inside, *home):
                os.close(descriptor)
            raise
        doors = self._doors[index] = (inside, home)
        return doors
