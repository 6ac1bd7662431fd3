"""Where a training rule's jobs run: the ``cluster`` section as Snakemake resources and a launch prefix.

A job of one task is what it always was: the SLURM jobstep runs it in ``srun -n1`` with the job's GPUs
(``gpu`` -> ``--gpus``). A job of several tasks is submitted with the executor's ``mpi`` resource, so that the
jobstep (snakemake-executor-plugin-slurm-jobstep 0.6.1) runs the rule's shell without ``srun -n1`` around it, and
the shell starts the tasks itself: ``srun`` inside the allocation (``SLURM_JOB_ID``, the one SLURM variable the
jobstep keeps, says where it runs), each task one rank that ``stages.training.distributed`` recognises by srun's
``SLURM_*`` variables. Outside SLURM the same job runs ``torchrun --standalone`` on this machine.

Why srun's tasks and not one torchrun per job: the jobstep wraps a job without ``mpi`` in a single-task step,
which confines torchrun's processes to one node and one task's CPUs; srun places ranks over nodes, gives each its
CPUs and passes its exit status on (torchrun turns a rank's exit 2 into 1). The sbatch side (plugin 2.8.0):
``nodes`` -> ``--nodes``, ``tasks`` -> ``--ntasks``; tasks and GPUs per node go through ``slurm_extra``
(``--ntasks-per-node``, ``--gpus-per-node``, which the plugin allows there), so that a job's GPUs spread evenly
and no ``--ntasks-per-gpu`` is derived from ``tasks``. An srun step gets every GPU the job holds on its node;
each rank takes its ``SLURM_LOCALID``-th. Torch-free: the Snakefile imports it.
"""

from __future__ import annotations

from typing import Any

from stages.core.options import from_mapping
from stages.workflow.sections import TrainingJob


def training_job(cfg: dict[str, Any], rule: str) -> TrainingJob:
    """The processes and GPUs of ``rule``'s jobs (its ``cluster`` entry, or the defaults)."""
    return from_mapping(TrainingJob, cfg["cluster"].get(rule) or {}, f"cluster.{rule}")


def job_gpus(job: TrainingJob) -> int:
    """GPUs of one job: as configured, else one per task."""
    return job.tasks if job.gpus is None else job.gpus


def launch_prefix(job: TrainingJob, threads: int) -> str:
    """The shell words before ``python -m stages.train``: none for one task; else srun's tasks inside a SLURM
    job (``threads`` CPUs each, a failed rank ends the others) and torchrun elsewhere."""
    if job.tasks == 1:
        return ""
    srun = (
        f"srun --kill-on-bad-exit=1 --nodes={job.nodes} --ntasks={job.tasks} "
        f"--ntasks-per-node={job.tasks // job.nodes} --cpus-per-task={threads}"
    )
    torchrun = f"torchrun --standalone --nproc_per_node={job.tasks} --no-python"
    return f'$(if [ -n "${{SLURM_JOB_ID:-}}" ]; then echo {srun}; else echo {torchrun}; fi)'


def job_resources(cfg: dict[str, Any], rule: str) -> dict[str, Any]:
    """The Snakemake resources of ``rule``'s jobs: SLURM placement and ``launch``, the shell prefix that starts
    the training processes. Resources, not params: placement is no rerun trigger."""
    job = training_job(cfg, rule)
    gpus = job_gpus(job)
    resources: dict[str, Any] = {"launch": launch_prefix(job, cfg["train"]["threads"])}
    if job.tasks == 1:
        return {**resources, "gpu": gpus} if gpus else resources
    per_node = f"--ntasks-per-node={job.tasks // job.nodes}"
    if gpus:
        per_node += f" --gpus-per-node={gpus // job.nodes}"
    return {**resources, "nodes": job.nodes, "tasks": job.tasks, "mpi": "srun", "slurm_extra": per_node}
