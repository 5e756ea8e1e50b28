"""One optimizer per term of a loss: each term's gradient gets its own Adam moments, clipping
and learning rate, and the parameter update is the sum of the terms' updates.

    optimizer = per_term_optimizer([make_optimizer(1e-5, ...), make_optimizer(5e-5, ...)])
    update = make_update(graphdef, (rl_loss_fn, anchor_loss_fn), optimizer)

Why: Adam normalises the gradient it is given, so in a summed loss the term with the larger
gradient sets the scale and a small term hardly moves the parameters whatever its weight. The RL
loss's NLL anchor is such a pair on Beauty (docs/results.md): alone, the policy gradient helps at
lr 1e-5 and the anchor at 5e-5, but summed the anchor's gradient dominates at any weight that
matters (weight 0.1 left the policy at the SFT point, weight 1 at lr 5e-5 is the control row).
With one optimizer per term each moves the policy as it would alone (`rl.nll_learning_rate`).

The gradients this transformation takes carry a leading axis of length T, one slice per term
(`train_state.make_update` given T loss functions differentiates each on its own and stacks
them); its state is the tuple of the T optimizers' states.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import optax


def per_term_optimizer(
    optimizers: Sequence[optax.GradientTransformation],
) -> optax.GradientTransformation:
    """The transformation whose update of term-stacked gradients g [T, ...] (every leaf) is
    sum_t optimizers[t].update(g[t]); needs T >= 2 (one term is the optimizer itself)."""
    optimizers = tuple(optimizers)
    if len(optimizers) < 2:
        raise ValueError(f"per_term_optimizer needs at least 2 optimizers, got {len(optimizers)}")

    def init(params: optax.Params) -> tuple[optax.OptState, ...]:
        return tuple(opt.init(params) for opt in optimizers)

    def update(grads: optax.Updates, state: tuple[optax.OptState, ...],
               params: optax.Params | None = None
               ) -> tuple[optax.Updates, tuple[optax.OptState, ...]]:
        counts = {leaf.shape[0] for leaf in jax.tree.leaves(grads)}
        if counts != {len(optimizers)}:
            raise ValueError(f"per_term_optimizer of {len(optimizers)} terms got gradients "
                             f"with leading axes {sorted(counts)}")
        total, new_state = None, []
        for t, opt in enumerate(optimizers):
            term_updates, term_state = opt.update(jax.tree.map(lambda g, t=t: g[t], grads),
                                                  state[t], params)
            new_state.append(term_state)
            total = term_updates if total is None else jax.tree.map(
                lambda a, b: a + b, total, term_updates)
        return total, tuple(new_state)

    return optax.GradientTransformation(init, update)
