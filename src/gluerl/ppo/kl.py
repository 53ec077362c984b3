"""KL controllers: the coefficient of the per-token KL penalty, fixed or adapted (``ppo.adaptive_kl``)."""

from __future__ import annotations

from .config import PPOConfig

class AdaptiveKLController:
    """Ziegler et al. (2019): ``coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon``."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"type": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"type": "fixed", "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


def kl_controller(ppo: PPOConfig) -> AdaptiveKLController | FixedKLController:
    """The controller ``ppo.adaptive_kl`` asks for, starting at ``ppo.kl_coef``."""
    if ppo.adaptive_kl:
        return AdaptiveKLController(ppo.kl_coef, ppo.target_kl, ppo.kl_horizon)
    return FixedKLController(ppo.kl_coef)
