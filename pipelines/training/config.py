"""The ``training:`` section of the config: labels, validation, fitting, tuning, promotion, retraining.

Every default here is what ``make run``'s starter model and ``scripts/train_model.py`` use;
a key can be set in the YAML file or with ``--set training.<key>=<value>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.model.settings import INT32_MAX, bounded, choices


@dataclass(frozen=True)
class LabelConfig:
    kind: str = field(default="fixed", metadata=choices("fixed", "triple_barrier"))
    # What the label's move is measured on: the mid of the best bid and ask, or the last trade (what the
    # feedback system scores voters on). Last trades bounce between bid and ask, and a model learns to
    # predict the bounce, which no order can earn: on a simulated morning the same recipe ranks with AUC
    # 0.61 on trade labels and 0.52 on mid labels (README, "Training the ML model").
    price: str = field(default="mid", metadata=choices("mid", "trade"))
    horizon_s: float = field(default=10.0, metadata=bounded(0.001, 86_400))  # event time after the sample
    # A move smaller than this many ticks is no trade and gets no label; raised to the round-trip
    # cost (spread + B3 fees both ways, in ticks) when smaller: a move that does not pay them is not a trade.
    dead_zone_ticks: float = field(default=0.0, metadata=bounded(0, 10_000))
    spread_ticks: float = field(default=1.0, metadata=bounded(0, 100))  # what crossing the spread costs a round trip
    tp_ticks: float = field(default=4.0, metadata=bounded(0.001, 10_000))  # triple barrier: take-profit
    sl_ticks: float = field(default=4.0, metadata=bounded(0.001, 10_000))  # triple barrier: stop-loss


@dataclass(frozen=True)
class CVConfig:
    scheme: str = field(default="walk_forward", metadata=choices("walk_forward", "cpcv"))
    n_splits: int = field(default=5, metadata=bounded(2, 100))  # walk-forward test folds
    n_groups: int = field(default=6, metadata=bounded(3, 50))  # cpcv: contiguous groups
    n_test_groups: int = field(default=2, metadata=bounded(1, 49))  # cpcv: groups per test set
    embargo_s: float = field(default=30.0, metadata=bounded(0, 86_400))  # after each test block, event time
    min_train: int = field(default=200, metadata=bounded(10, INT32_MAX))  # labelled training samples per fold


@dataclass(frozen=True)
class FitConfig:
    max_depth: int = field(default=3, metadata=bounded(1, 16))
    eta: float = field(default=0.05, metadata=bounded(0.0001, 1))
    min_child_weight: float = field(default=20.0, metadata=bounded(0, 10_000))
    subsample: float = field(default=0.8, metadata=bounded(0.05, 1))
    colsample_bytree: float = field(default=0.8, metadata=bounded(0.05, 1))
    reg_lambda: float = field(default=1.0, metadata=bounded(0, 10_000))
    num_boost_round: int = field(default=300, metadata=bounded(1, 100_000))
    early_stopping_rounds: int = field(default=30, metadata=bounded(1, 10_000))
    validation_fraction: float = field(default=0.2, metadata=bounded(0.05, 0.5))  # of a training fold: early stopping
    calibration: str = field(default="platt", metadata=choices("platt", "isotonic", "none"))
    calibration_fraction: float = field(default=0.2, metadata=bounded(0.05, 0.5))  # of a training fold
    seed: int = field(default=0, metadata=bounded(0, INT32_MAX))


@dataclass(frozen=True)
class PromotionConfig:
    # A challenger replaces the champion when, refitted on the same folds of the same data, its mean
    # log loss is lower by at least min_improvement AND it is lower on at least min_fold_wins of the folds.
    min_improvement: float = field(default=0.0005, metadata=bounded(0, 10))
    min_fold_wins: float = field(default=0.6, metadata=bounded(0, 1))  # fraction of folds


@dataclass(frozen=True)
class RetrainConfig:
    days: int = field(default=10, metadata=bounded(1, 3650))  # the last N recorded days
    recordings: str = "data/recordings"
    at: str = "18:45"  # Sao Paulo time, after the session closes (scripts/train_model.py schedule)
    trials: int = field(default=16, metadata=bounded(0, 10_000))  # Ray Tune trials (0: the fit defaults)


@dataclass(frozen=True)
class TrainingConfig:
    label: LabelConfig = field(default_factory=LabelConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    backtest: bool = True  # the model alone through the backtest engine on each walk-forward test fold
    bootstrap: int = field(default=500, metadata=bounded(0, 100_000))  # resamples of each confidence interval
    leak_auc: float = field(default=0.98, metadata=bounded(0.5, 1))  # one feature this predictive alone is refused
