"""The isolation layer that runs untrusted reward code.

Layers, outermost first (``doctor()`` says which are active here):

1. static lint (``reward_designer.lint``): a filter in the critic, not a boundary;
2. process: allow-listed environment, own run folder, stdin closed, output
   capped to a tail, wall-clock deadline, disk quota on the run folder;
3. namespaces (bubblewrap): no network, read-only system, nothing of the
   machine visible but the Python installation and the run folder, own PID
   namespace (``namespaces.py``);
4. an unprivileged uid (65534) and rlimits: address space, CPU, file size,
   open files, processes, no core dumps (``rlimits.py``); a worker on a GPU
   gets a resident-memory limit, polled, instead of the address-space one,
   which CUDA cannot start under (``Limits.address_space``);
5. Landlock and seccomp, applied by the worker itself after its imports
   (``confine_self()``): a file-system allow-list (``landlock.py``) and a
   system-call filter (``seccomp.py``).

The parent side is ``run_worker``; the worker calls ``confine_self()``.
Integrity does not rest on these layers alone: a reward program gets fresh
copies of the state, and fitness is measured by a worker that never loads it.
"""

from .layers import SandboxUnavailable, confine_forked, confine_self, doctor
from .models import LAYERS, LayerStatus, Limits, Outcome
from .runner import copy_output, read_output, run_worker, sanitize_workdir

__all__ = [
    "LAYERS",
    "LayerStatus",
    "Limits",
    "Outcome",
    "SandboxUnavailable",
    "confine_forked",
    "confine_self",
    "copy_output",
    "doctor",
    "read_output",
    "run_worker",
    "sanitize_workdir",
]
