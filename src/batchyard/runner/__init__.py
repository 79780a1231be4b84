"""Runs ONE attempt anywhere: workdir, package, environment, program, timeout, log uploads.

The public surface agents use::

    from batchyard.runner import AttemptControl, RunnerSettings, run_attempt

    control = AttemptControl()            # keep it to call control.cancel() from elsewhere
    outcome = run_attempt(request, objects, control, RunnerSettings(work_root=...))
"""

from batchyard.runner.control import AttemptControl
from batchyard.runner.package import PackageError, PackageLimits, extract_package
from batchyard.runner.runner import run_attempt
from batchyard.runner.settings import RunnerSettings

__all__ = ["AttemptControl", "PackageError", "PackageLimits", "RunnerSettings", "extract_package",
           "run_attempt"]
