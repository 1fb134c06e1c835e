"""objio's demo: train a tiny model, checkpoint it, get preempted, resume from the latest checkpoint.

    python examples/train_and_resume.py                       # checkpoints in ./objio-demo-run
    python examples/train_and_resume.py --logdir s3://bucket/run   # with objio-s3 installed

The first run is killed with SIGKILL halfway through (as a preempted cloud job is); the second run
finds the latest checkpoint, restores the model and its step counter, and finishes the training.
Run it again and it says the training is already done; pass ``--fresh`` to start over in a new folder.
Each checkpoint carries its step and loss as metadata: look at them with ``objio ls objio-demo-run``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp

import objio

STEPS = 60
SAVE_EVERY = 10


class Regressor(objio.Module):
    """A two-layer network that learns y = sin(x)."""

    def __init__(self) -> None:
        self.net = objio.nn.Sequential([objio.nn.Linear(1, 32), objio.functional.tanh, objio.nn.Linear(32, 1)])
        self.step = objio.StateVar(jnp.array(0, jnp.int32))  # saved with the weights

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.net(x)


def loss_fn(params: list[jax.Array], model: Regressor, x: jax.Array, y: jax.Array) -> jax.Array:
    train_vars = model.vars().subset(objio.TrainVar)
    originals = train_vars.tensors()
    train_vars.assign(params)
    try:
        return ((model(x) - y) ** 2).mean()
    finally:
        train_vars.assign(originals)


def train(logdir: str, preempt_at: int | None) -> None:
    objio.random.DEFAULT_GENERATOR.seed(0)
    model = Regressor()
    ckpt = objio.Checkpoint(logdir, keep_ckpts=3)
    if ckpt.indices():
        start, path = ckpt.restore(model.vars())
        print(f"resumed from {path} at step {start} (the model's own counter says {int(model.step.value)})")
    else:
        start = 0
        print(f"no checkpoint in {logdir}: starting from scratch")
    if start >= STEPS:
        saved_loss = (ckpt.metadata(start) or {}).get("loss")
        loss_text = f"{saved_loss:.4f}" if isinstance(saved_loss, float) else "not recorded"
        print(f"training is already done: step {start}, loss {loss_text}; checkpoints kept: {ckpt.indices()}")
        return

    x = jnp.linspace(-3, 3, 256)[:, None]
    y = jnp.sin(x)
    train_vars = model.vars().subset(objio.TrainVar)
    grad = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, model, x, y)))
    loss = jnp.array(float("nan"))
    for step in range(start + 1, STEPS + 1):
        loss, grads = grad(train_vars.tensors())
        train_vars.assign([v - 0.1 * g for v, g in zip(train_vars.tensors(), grads, strict=True)])
        model.step.value = jnp.array(step, jnp.int32)
        if step % SAVE_EVERY == 0:
            ckpt.save(model.vars(), step, metadata={"step": step, "loss": float(loss)})
            print(f"step {step:3d}  loss {float(loss):.4f}  saved checkpoint {ckpt.path(step)}")
        if step == preempt_at:
            print(f"step {step:3d}  preempted (SIGKILL)", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    print(f"done: step {int(model.step.value)}, loss {float(loss):.4f}; checkpoints kept: {ckpt.indices()}")


def fresh_folder(logdir: str) -> str:
    """``logdir`` if it holds no checkpoint, else the first of ``logdir-2``, ``logdir-3`` ... that holds none."""
    candidate, n = logdir, 1
    while objio.Checkpoint(candidate, keep_ckpts=None).indices():
        n += 1
        candidate = f"{logdir.rstrip('/')}-{n}"
    return candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="objio-demo-run", help="a local folder or a URL (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="start over in a new folder if LOGDIR holds checkpoints")
    parser.add_argument("--preempt-at", type=int, help=argparse.SUPPRESS)  # used by the demo's own first run
    args = parser.parse_args()
    if args.preempt_at is not None:
        train(args.logdir, args.preempt_at)
        return

    logdir = fresh_folder(args.logdir) if args.fresh else args.logdir
    done = objio.Checkpoint(logdir, keep_ckpts=None).indices()
    if done and done[-1] >= STEPS:
        print(f"== {logdir} holds the finished run (pass --fresh to train again in a new folder)")
        train(logdir, preempt_at=None)
        return
    print(f"== run 1: training to step {STEPS} in {logdir}, but the job is killed at step 35")
    first = subprocess.run([sys.executable, __file__, "--logdir", logdir, "--preempt-at", "35"], check=False)
    if first.returncode < 0:
        print(f"(run 1 ended with signal {-first.returncode})\n")
    else:
        print(f"(run 1 was not preempted: {logdir} already held a later checkpoint)\n")
    print("== run 2: the job restarts and resumes from the latest checkpoint")
    train(logdir, preempt_at=None)
    print(f"\nlook at the checkpoints: objio ls {logdir}")


if __name__ == "__main__":
    main()
