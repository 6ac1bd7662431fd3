"""Where the jobs run: every rule's SLURM resources with the ``site`` section, and a training rule's ``cluster``
section as Snakemake resources and a launch prefix.

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
each rank takes its ``SLURM_LOCALID``-th.

Every rule's jobs get their SLURM placement here (:func:`rule_resources`): the rule's own CPUs, memory and time
limit (``SHAPES``) on the partition for jobs with or without GPUs, plus the config's ``site`` section (account,
partitions, GPU model, constraints, QoS, extra flags, a time-limit cap). Every rule declares them as its own
resources, so a site setting adds to the numbers, and nothing Snakemake layers over rules by whole keys can drop
them (a ``--default-resources`` on the command line replaces a profile's whole default-resources; a profile's
set-resources would replace the config's placement key by key); ``--set-resources RULE:KEY=VALUE`` still changes
one number of one rule. A GPU model becomes the executor's ``gpu_model`` (``--gpus=h100:1``), ``gres``
(``--gres=gpu:h100:1``) or, for several tasks, ``--gpus-per-node=h100:N``. Torch-free: the Snakefile imports it
(the CUDA probe of :func:`local_device_problem` runs torch in a subprocess).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from stages.core.cli import UserError
from stages.core.options import from_mapping
from stages.workflow.sections import TRAINING_RULES, Site, TrainingJob


@dataclass(frozen=True)
class Shape:
    """What one job of a rule asks SLURM for, before the site's settings: CPUs, memory (MB), time limit (minutes)
    and GPUs (training rules: from their ``cluster`` entry instead)."""

    cpus: int
    mem_mb: int
    runtime: int
    gpus: int = 0


# The rules' jobs by what they need. A rule not listed gets DEFAULT_SHAPE (the light table and figure jobs).
DEFAULT_SHAPE = Shape(cpus=2, mem_mb=4000, runtime=30)
TRAINING_SHAPE = Shape(cpus=8, mem_mb=64000, runtime=1440)
SHAPES = {
    "data": Shape(cpus=8, mem_mb=32000, runtime=120),
    "data_tokenizer": Shape(cpus=8, mem_mb=32000, runtime=120),
    "data_shard": Shape(cpus=2, mem_mb=16000, runtime=120),
    "expand_moe": Shape(cpus=2, mem_mb=32000, runtime=60),
    "import_parent": Shape(cpus=4, mem_mb=64000, runtime=60),
    "upcycle": Shape(cpus=2, mem_mb=32000, runtime=60),
    "grow": Shape(cpus=2, mem_mb=32000, runtime=60),
    "fit": Shape(cpus=8, mem_mb=4000, runtime=60),
    "evaluate": Shape(cpus=4, mem_mb=32000, runtime=60, gpus=1),
    **dict.fromkeys(TRAINING_RULES, TRAINING_SHAPE),
}
# sbatch flags that the site keys, the shapes or the executor set: refused in site.gpu_extra (the SLURM executor
# plugin would refuse them at the first submission, after the jobs before it ran)
MANAGED_FLAGS = (
    "-A", "--account", "-p", "--partition", "-C", "--constraint", "--qos", "-t", "--time", "--mem",
    "--mem-per-cpu", "-n", "--ntasks", "--ntasks-per-gpu", "-c", "--cpus-per-task", "--cpus-per-gpu", "-N",
    "--nodes", "--gres", "--gpus", "--gpus-per-node", "--ntasks-per-node", "--mem-per-gpu", "-J", "--job-name",
    "-o", "--output", "-e", "--error", "-D", "--chdir", "--workdir", "--export", "--comment", "--clusters",
)  # fmt: skip


def site_settings(cfg: dict[str, Any]) -> Site:
    """The ``site`` section (defaults where the config has none); a flag of site.gpu_extra that the workflow sets
    itself is a one-line error naming the key."""
    site = from_mapping(Site, cfg.get("site") or {}, "site")
    for flag in (word.split("=", 1)[0] for word in site.gpu_extra.split()):
        if flag in MANAGED_FLAGS:
            raise UserError(
                f"config key 'site.gpu_extra': {flag} is set by the workflow (site keys, each rule's CPUs, memory, "
                "time and GPUs); use the site key for it or --set-resources"
            )
    return site


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


def gpu_request(site: Site, gpus: int, gpu_type: str | None) -> dict[str, Any]:
    """The resources of a one-task job's ``gpus`` GPUs (of model ``gpu_type``): ``gpu`` (+ ``gpu_model``) ->
    ``--gpus=[type:]N``, or with site.gpu_request gres ``--gres=gpu:[type:]N``."""
    if not gpus:
        return {}
    if site.gpu_request == "gres":
        return {"gres": f"gpu:{gpu_type}:{gpus}" if gpu_type else f"gpu:{gpus}"}
    return {"gpu": gpus, "gpu_model": gpu_type} if gpu_type else {"gpu": gpus}


def job_resources(cfg: dict[str, Any], rule: str) -> dict[str, Any]:
    """The Snakemake resources of training rule ``rule``'s jobs: nodes, tasks, GPUs (of the rule's or the site's
    GPU model) and ``launch``, the shell prefix that starts the training processes. Resources, not params:
    placement is no rerun trigger."""
    job = training_job(cfg, rule)
    site = site_settings(cfg)
    gpus = job_gpus(job)
    gpu_type = job.gpu_type or site.gpu_type
    resources: dict[str, Any] = {"launch": launch_prefix(job, cfg["train"]["threads"])}
    if job.tasks == 1:
        return {**resources, **gpu_request(site, gpus, gpu_type)}
    per_node = f"--ntasks-per-node={job.tasks // job.nodes}"
    if gpus and site.gpu_request == "gres":  # --gres counts per node; tasks_per_gpu 0: no --ntasks-per-gpu
        resources.update(gres=f"gpu:{gpu_type}:{gpus // job.nodes}" if gpu_type else f"gpu:{gpus // job.nodes}")
        resources["tasks_per_gpu"] = 0
    elif gpus:
        per_node += f" --gpus-per-node={f'{gpu_type}:' if gpu_type else ''}{gpus // job.nodes}"
    return {**resources, "nodes": job.nodes, "tasks": job.tasks, "mpi": "srun", "slurm_extra": per_node}


def rule_resources(cfg: dict[str, Any], rule: str) -> dict[str, Any]:
    """Every SLURM resource of ``rule``'s jobs: its shape (CPUs per task, memory per node, time limit cut to
    site.max_runtime), on the GPU or CPU partition with that side's constraint, the site's account, QoS and
    GPU jobs' extra flags; a training rule's nodes, tasks, GPUs and ``launch`` (:func:`job_resources`), another
    rule's GPUs from its shape, of site.gpu_type."""
    site = site_settings(cfg)
    shape = SHAPES.get(rule, DEFAULT_SHAPE)
    runtime = min(shape.runtime, site.max_runtime) if site.max_runtime else shape.runtime
    out: dict[str, Any] = {"cpus_per_task": shape.cpus, "mem_mb": shape.mem_mb, "runtime": runtime}
    if rule in TRAINING_RULES:
        gpus = job_gpus(training_job(cfg, rule))
        out.update(job_resources(cfg, rule))
    else:
        gpus = shape.gpus
        out.update(gpu_request(site, gpus, site.gpu_type))
    gpu_side = (site.gpu_partition, site.gpu_constraint)
    partition, constraint = gpu_side if gpus else (site.cpu_partition, site.cpu_constraint)
    named = {"slurm_partition": partition, "slurm_account": site.account, "constraint": constraint, "qos": site.qos}
    out.update({k: v for k, v in named.items() if v is not None})
    extra = " ".join(filter(None, (out.get("slurm_extra", ""), site.gpu_extra if gpus else "")))
    if extra:
        out["slurm_extra"] = extra
    return out


def local_device_problem(cfg: dict[str, Any]) -> str | None:
    """Why this machine cannot run the config's training jobs itself (None if it can): ``train.device`` cuda where
    this environment's torch sees no CUDA device. Asked in a subprocess, so that the Snakefile stays torch-free,
    and only when training jobs are about to run here rather than on a cluster."""
    device = str(cfg["train"]["device"])
    if not device.startswith("cuda"):
        return None
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 3:
        return None  # CUDA is there (or torch itself is broken, which the job will say)
    return (
        f"config key 'train.device': {device}, but torch sees no CUDA device on this machine, where the training "
        "jobs would run; run them on a GPU cluster (--profile profiles/slurm) or set train.device: cpu or auto"
    )
