"""A minimal worker for the sandbox's own tests: ``python -m snippet_worker JOB.json``.

The job is JSON: ``{"code": "...", "confine": true, "torch": true}``. Like the
real worker it does its imports, then confines itself, then runs the code.
"""

import json
import sys

job = json.loads(open(sys.argv[1]).read())
if job.get("torch", False):
    import torch  # noqa: F401 - imported before confinement, as the real worker does
if job.get("confine", True):
    from reward_designer.sandbox import confine_self

    confine_self()
exec(compile(job["code"], "<snippet>", "exec"), {"__name__": "snippet"})
