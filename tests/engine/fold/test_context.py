import numpy as np
import torch

from engine.state.codec import UserState
from engine.fold.context import _Arrays, apply_event, user_contexts


def _states(n: int, seed: int = 0) -> list[UserState]:
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n):
        st = UserState.empty(4)
        t = 1000.0 * u
        for _ in range(int(rng.integers(0, 30))):  # some users have no events, some more than the profile holds
            t += float(rng.exponential(50))
            apply_event(st, f"i{rng.integers(0, 12)}", t, int(rng.integers(0, 3)), max_items=6)
        out.append(st)
    return out


def test_batched_contexts_equal_one_user_at_a_time():
    index = {f"i{k}": k for k in range(12)}

    def rows_of(ids):
        return np.array([index[i] for i in ids], np.int64)

    states = _states(40)
    for now in (None, np.array([1000.0 * u + 700 for u in range(40)])):
        batched = user_contexts(states, rows_of, max_items=4, hist_len=5, now=now)
        one = _Arrays(len(states), 4, 5)
        for b, st in enumerate(states):
            t = (st.hist_times[0] if st.hist_times else 0.0) if now is None else float(now[b])
            one.fill(b, st, rows_of, t)
        for name, a in vars(batched).items():
            assert torch.allclose(a.float(), getattr(one.tensors(), name).float()), name
