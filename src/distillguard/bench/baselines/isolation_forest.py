"""Baseline 2: an unsupervised per-account anomaly detector (Isolation Forest).

What a data scientist would build without knowing how campaigns work: per-account behaviour
features (baselines.account_features) fed to scikit-learn's IsolationForest, trained on organic
reference traffic, with the alarm threshold set so that the reference accounts stay under the
false-positive ceiling. It sees each account alone, so it finds accounts that are unusual, not
accounts that belong together.

Reference: F. T. Liu, K. M. Ting, Z.-H. Zhou, "Isolation Forest", ICDM 2008.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import numpy as np
import pyarrow as pa
from sklearn.ensemble import IsolationForest

from distillguard.bench.baselines.account_features import FEATURES, account_features, model_matrix
from distillguard.bench.baselines.history import cutoffs
from distillguard.bench.baselines.parameters import check_parameters
from distillguard.bench.baselines.verdict_table import verdict_table
from distillguard.errors import UserError
from distillguard.store import Store
from distillguard.store.verdicts import SEVERITY

PARAMETERS: dict[str, tuple[float, float]] = {
    "n_estimators": (1, 10_000),
    "max_samples": (2, 1_000_000),
    "throttle_fpr": (0.0, 1.0),
    "monitor_fpr": (0.0, 1.0),
    "random_state": (0, 2**32 - 1),
}

#: a flagged account's reason names its features beyond this reference quantile (either side)
UNUSUAL_QUANTILE = 0.99


class IsolationForestBaseline:
    """Isolation Forest over per-account features, thresholded on organic reference traffic.

    Args:
        n_estimators, max_samples: passed to ``sklearn.ensemble.IsolationForest``.
        throttle_fpr: share of reference organic accounts allowed above the throttle threshold
            (the threshold is their ``1 - throttle_fpr`` score quantile: with fewer than
            ``1 / throttle_fpr`` reference accounts, the highest organic score).
        monitor_fpr: the same for ``monitor``.
        random_state: seed of the forest.

    ``score`` is the anomaly score s(x) of Liu et al. (``-score_samples``), in (0, 1]: near 1 =
    isolated in a few splits (anomalous), around 0.5 or below = ordinary.
    Fitted state: ``model_``, ``throttle_threshold_``, ``monitor_threshold_``, ``low_``/``high_``
    (per-feature reference quantiles used in reasons).
    """

    name = "isolation_forest"

    def __init__(self, n_estimators: int = 200, max_samples: int = 256, throttle_fpr: float = 1e-4,
                 monitor_fpr: float = 1e-2, random_state: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.throttle_fpr = throttle_fpr
        self.monitor_fpr = monitor_fpr
        self.random_state = random_state

    def fit(self, reference: Store) -> "IsolationForestBaseline":
        check_parameters(vars(self), PARAMETERS)
        features = account_features(reference.con, cutoffs(None))
        if features.num_rows < 2:
            raise UserError("the reference store needs at least two accounts to fit an isolation forest")
        x = model_matrix(features)
        self.model_ = IsolationForest(n_estimators=int(self.n_estimators),
                                      max_samples=min(int(self.max_samples), len(x)),
                                      random_state=int(self.random_state), n_jobs=1).fit(x)
        scores = -self.model_.score_samples(x)
        self.throttle_threshold_ = float(np.quantile(scores, 1 - self.throttle_fpr, method="higher"))
        self.monitor_threshold_ = min(self.throttle_threshold_,
                                      float(np.quantile(scores, 1 - self.monitor_fpr, method="higher")))
        raw = np.column_stack([features[f.name].to_numpy() for f in FEATURES])
        self.low_ = np.quantile(raw, 1 - UNUSUAL_QUANTILE, axis=0)
        self.high_ = np.quantile(raw, UNUSUAL_QUANTILE, axis=0)
        return self

    def detect(self, store: Store, as_of: datetime | None = None) -> pa.Table:
        return self._judge(account_features(store.con, cutoffs(as_of)), as_of)

    def replay(self, store: Store, as_ofs: Sequence[datetime]) -> pa.Table:
        """Verdicts at every as-of time, as ``detect`` would give them (see bench.replay)."""
        features = account_features(store.con, as_ofs)
        return self._judge(features, features["as_of"].combine_chunks())

    def _judge(self, features: pa.Table, as_of) -> pa.Table:
        x = model_matrix(features)
        score = -self.model_.score_samples(x) if len(x) else np.zeros(0)
        severity = np.where(score > self.throttle_threshold_, SEVERITY["throttle"],
                            np.where(score > self.monitor_threshold_, SEVERITY["monitor"], SEVERITY["allow"]))
        reasons: list[list[str]] = [[] for _ in range(len(x))]
        flagged = np.flatnonzero(severity)
        if len(flagged):
            raw = np.column_stack([features[f.name].to_numpy()[flagged] for f in FEATURES])
            for row, i in enumerate(flagged):
                level = "throttle" if severity[i] == SEVERITY["throttle"] else "monitor"
                threshold = self.throttle_threshold_ if level == "throttle" else self.monitor_threshold_
                reasons[i].append(f"isolation_forest score {score[i]:.3f} > {level} threshold {threshold:.3f}")
                reasons[i].extend(self._unusual(raw[row]))
        return verdict_table(features["account_id"], severity, score, reasons, as_of)

    def _unusual(self, values: np.ndarray) -> list[str]:
        """The features that make an account stand out, each with the organic range it left."""
        out = []
        for f, value, low, high in zip(FEATURES, values, self.low_, self.high_):
            if value > high:
                out.append(f"{f.name} {value:.4g} > organic p{UNUSUAL_QUANTILE * 100:g} {high:.4g}")
            elif value < low:
                out.append(f"{f.name} {value:.4g} < organic p{(1 - UNUSUAL_QUANTILE) * 100:g} {low:.4g}")
        return out
