"""objio's demo: train a tiny model, checkpoint it, get preempted, resume from the latest checkpoint.

    python examples/train_and_resume.py                       # checkpoints in ./objio-demo-run
    python examples/train_and_resume.py --logdir s3://bucket/run   # with objio-s3 installed

The first run is killed with SIGKILL halfway through (as a preempted cloud job is); the second run
finds the latest checkpoint, restores model and optimizer state, and finishes the training.
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

    x = jnp.linspace(-3, 3, 256)[:, None]
    y = jnp.sin(x)
    train_vars = model.vars().subset(objio.TrainVar)
    grad = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, model, x, y)))
    for step in range(start + 1, STEPS + 1):
        loss, grads = grad(train_vars.tensors())
        train_vars.assign([v - 0.1 * g for v, g in zip(train_vars.tensors(), grads, strict=True)])
        model.step.value = jnp.array(step, jnp.int32)
        if step % SAVE_EVERY == 0:
            ckpt.save(model.vars(), step)
            print(f"step {step:3d}  loss {float(loss):.4f}  saved checkpoint {ckpt.path(step)}")
        if step == preempt_at:
            print(f"step {step:3d}  preempted (SIGKILL)", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    print(f"done: step {int(model.step.value)}, loss {float(loss):.4f}; checkpoints kept: {ckpt.indices()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="objio-demo-run", help="a local folder or a URL (default: %(default)s)")
    parser.add_argument("--preempt-at", type=int, help=argparse.SUPPRESS)  # used by the demo's own first run
    args = parser.parse_args()
    if args.preempt_at is not None:
        train(args.logdir, args.preempt_at)
        return

    print(f"== run 1: training to step {STEPS}, but the job is killed at step 35")
    first = subprocess.run([sys.executable, __file__, "--logdir", args.logdir, "--preempt-at", "35"], check=False)
    if first.returncode < 0:
        print(f"(run 1 ended with signal {-first.returncode})\n")
    else:
        print(f"(run 1 was not preempted: {args.logdir} already held a later checkpoint)\n")
    print("== run 2: the job restarts and resumes from the latest checkpoint")
    train(args.logdir, preempt_at=None)


if __name__ == "__main__":
    main()
