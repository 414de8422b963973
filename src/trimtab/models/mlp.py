"""A small multilayer perceptron: trained with PyTorch (CPU), served as numpy matmuls.

Inputs are standardised with the training means and deviations; hidden layers use ReLU; the
output is a logit (binary: ``sigmoid``) or a log-rate (count: ``exp``, Poisson loss). Training
uses Adam with weight decay, mini-batches in a seeded order, and stops early on the loss of
the latest 10 % of the training rows (time order), keeping the best weights.

For serving, :class:`MLP` holds the weights as float64 arrays with the standardisation folded
into the first layer (``W₁' = W₁ / σ``, ``b₁' = b₁ − (μ/σ)·W₁``), so a user costs a few
``x @ W`` calls; outputs equal PyTorch's forward pass to ~1e-7 (tested to 1e-6). Torch is
imported only by :func:`train_mlp`.

>>> import numpy as np
>>> net = MLP([np.eye(2), np.ones((2, 1))], [np.zeros(2), np.zeros(1)], link="identity")
>>> net.predict(np.array([1.0, -3.0]))
1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from trimtab.models.links import LINKS, Linked


class MLPError(ValueError):
    """Weights that cannot be served (shapes, non-finite values)."""


class MLP(Linked):
    """The numpy forward pass of a trained network."""

    def __init__(
        self, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray], link: str = "sigmoid"
    ) -> None:
        self.weights = [np.ascontiguousarray(w, dtype=np.float64) for w in weights]
        self.biases = [np.ascontiguousarray(b, dtype=np.float64) for b in biases]
        self.link = link
        if not self.weights or len(self.weights) != len(self.biases):
            raise MLPError("an MLP needs as many bias vectors as weight matrices, at least one")
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.ndim != 2 or b.shape != (w.shape[1],):
                raise MLPError(f"layer {i}: weights {w.shape} do not fit biases {b.shape}")
            if i and w.shape[0] != self.weights[i - 1].shape[1]:
                raise MLPError(
                    f"layer {i} takes {w.shape[0]} inputs, the layer before gives "
                    f"{self.weights[i - 1].shape[1]}"
                )
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise MLPError(f"layer {i} has non-finite weights")
        if link not in LINKS:
            raise MLPError(f"unknown link {link!r}")
        self.n_outputs = self.weights[-1].shape[1]
        if (link == "softmax") != (self.n_outputs > 1) or (
            link == "softmax" and self.n_outputs < 2
        ):
            raise MLPError(
                f"the last layer has {self.n_outputs} outputs: one for the {link} link, "
                "a unit per class (two or more) for softmax"
            )
        self.n_features = self.weights[0].shape[0]
        self._hidden = list(zip(self.weights[:-1], self.biases[:-1], strict=True))
        single = self.n_outputs == 1
        self._last_w = self.weights[-1][:, 0].copy() if single else self.weights[-1]
        self._last_b: float | np.ndarray = float(self.biases[-1][0]) if single else self.biases[-1]

    def raw(self, x: np.ndarray) -> Any:
        h = x
        for w, b in self._hidden:
            h = h @ w
            h += b
            np.maximum(h, 0.0, out=h)
        if self.n_outputs > 1:
            return h @ self._last_w + self._last_b
        return float(h @ self._last_w) + self._last_b

    def raw_many(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float64)
        for w, b in self._hidden:
            h = np.maximum(h @ w + b, 0.0)
        raw: np.ndarray = h @ self._last_w + self._last_b
        return raw

    def layers(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Weights (inputs × outputs) and biases per layer, for the compiled scorer."""
        return self.weights, self.biases

    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "link": np.array(self.link),
            "layers": np.array(len(self.weights)),
        }
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"w{i}"], out[f"b{i}"] = w, b
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> MLP:
        try:
            n = int(arrays["layers"])
            return cls(
                [arrays[f"w{i}"] for i in range(n)],
                [arrays[f"b{i}"] for i in range(n)],
                str(arrays["link"]),
            )
        except KeyError as exc:
            raise MLPError(f"the MLP arrays lack {exc.args[0]!r}") from None


def train_mlp(
    x: np.ndarray,
    y: np.ndarray,
    kind: str = "binary",
    hidden: Sequence[int] = (32, 16),
    epochs: int = 40,
    batch_size: int = 512,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    patience: int = 4,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[MLP, Any]:
    """Train on rows in time order; returns the served :class:`MLP` and the torch module.

    ``kind``: ``binary`` (a logit), ``count`` (a log-rate, Poisson loss) or ``multiclass``
    (``y`` holds class indices 0…K−1; K logits, cross-entropy, served through softmax).

    The torch module takes *standardised* inputs; :class:`MLP` takes raw ones.
    """
    import torch

    torch.manual_seed(seed)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = ((x - mean) / scale).astype(np.float32)
    n_valid = max(1, len(z) // 10) if len(z) >= 20 else 0
    fit_z, fit_y = z[: len(z) - n_valid], y[: len(z) - n_valid]
    layers: list[Any] = []
    width = x.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(width, int(h)), torch.nn.ReLU()]
        width = int(h)
    classes = int(y.max()) + 1 if kind == "multiclass" else 1
    layers.append(torch.nn.Linear(width, classes))
    net = torch.nn.Sequential(*layers)
    if kind == "multiclass":
        loss_fn: Any = torch.nn.CrossEntropyLoss()
        share = np.bincount(fit_y.astype(np.intp), minlength=classes) / max(len(fit_y), 1)
        start: Any = torch.from_numpy(np.log(np.clip(share, 1e-4, None)).astype(np.float32))
    elif kind == "binary":
        loss_fn = torch.nn.BCEWithLogitsLoss()
        base = float(np.clip(fit_y.mean(), 1e-4, 1 - 1e-4))
        start = math.log(base / (1 - base))
    else:
        loss_fn = torch.nn.PoissonNLLLoss(log_input=True, full=False)
        start = math.log(max(float(fit_y.mean()), 1e-4))
    with torch.no_grad():  # start from the base rate, not from 0.5
        if kind == "multiclass":
            layers[-1].bias.copy_(start)
        else:
            layers[-1].bias.fill_(start)
    target_dtype = np.int64 if kind == "multiclass" else np.float32
    head = _all_outputs if kind == "multiclass" else _first_output
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    tx, ty = torch.from_numpy(fit_z), torch.from_numpy(fit_y.astype(target_dtype))
    vx = torch.from_numpy(z[len(z) - n_valid :])
    vy = torch.from_numpy(y[len(z) - n_valid :].astype(target_dtype))
    generator = torch.Generator().manual_seed(seed)
    best, best_state, waited = math.inf, None, 0
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(tx), generator=generator)
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(head(net(tx[idx])), ty[idx])
            loss.backward()
            optimizer.step()
        if not n_valid:
            continue
        net.eval()
        with torch.no_grad():
            valid = float(loss_fn(head(net(vx)), vy))
        if progress is not None:
            progress(epoch + 1, valid)
        if valid < best - 1e-6:
            best, waited = valid, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = [m.weight.detach().numpy().astype(np.float64).T for m in linears]
    biases = [m.bias.detach().numpy().astype(np.float64) for m in linears]
    # fold the standardisation into the first layer
    first_w = weights[0] / scale[:, None]
    biases[0] = biases[0] - (mean / scale) @ weights[0]
    weights[0] = first_w
    served = MLP(weights, biases, {"binary": "sigmoid", "multiclass": "softmax"}.get(kind, "exp"))
    net.trimtab_mean, net.trimtab_scale = mean, scale
    return served, net


def _all_outputs(out: Any) -> Any:
    return out


def _first_output(out: Any) -> Any:
    return out[:, 0]


def torch_predict(net: Any, x: np.ndarray, kind: str = "binary") -> np.ndarray:
    """The torch module's own predictions for raw inputs (the reference in tests)."""
    import torch

    z = ((np.asarray(x, dtype=np.float64) - net.trimtab_mean) / net.trimtab_scale).astype(
        np.float32
    )
    with torch.no_grad():
        out = net(torch.from_numpy(z))
        if kind == "multiclass":
            out = torch.softmax(out, dim=1)
        else:
            out = torch.sigmoid(out[:, 0]) if kind == "binary" else torch.exp(out[:, 0])
    return out.numpy().astype(np.float64)
