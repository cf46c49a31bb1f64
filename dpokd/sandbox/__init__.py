"""Running untrusted generated code, and judging it where it cannot reach; public for plugin authors.

A job is split in two. The *program* (a model's code) runs in one process; the *checker* runs the
task's trusted tests in another and calls the program's function over a pipe. Arguments go one
way and return values come back as plain data (``wire``), decoded by the checker, so an object
whose ``__eq__`` always says yes never reaches a comparison. The checker alone holds the
descriptor its verdict goes to. An exit status means nothing.

Each worker starts one ``harness`` that forks every sample, so no interpreter starts per sample.
Each sample isolates itself with kernel mechanisms (``isolation``): namespaces of its own (a user
namespace when dpokd is not root), a filesystem view of the standard library alone, Landlock,
seccomp, no capabilities, and rlimits; as root also cgroups for memory, processes and CPU.
"""

from .runner import UNISOLATED_ENV, Job, Limits, Result, Sandbox, Status, check_isolation, probe

__all__ = ["UNISOLATED_ENV", "Job", "Limits", "Result", "Sandbox", "Status", "check_isolation", "probe"]
