# qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
"""The report of a whole-model quantization: one row per quantized layer or activation site
(signal-to-quantization-noise ratios of its weights and of its output on a calibration batch),
the model output's SQNR, and notes on what was not quantized. A data structure that prints as a
table (str(report)), converts to plain dicts (report.to_dict()) for JSON and draws its SQNRs
(report.plot(path))."""

import dataclasses
import math
from typing import Any, Dict, List, Optional

import numpy as np


def sqnr_db(reference: np.ndarray, quantized: np.ndarray) -> float:
    """10 log10(sum(ref^2) / sum((ref - q)^2)) in dB (inf when they are equal), in float64."""
    r = np.asarray(reference, dtype=np.float64)
    d = r - np.asarray(quantized, dtype=np.float64)
    noise = float(np.sum(d * d))
    signal = float(np.sum(r * r))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclasses.dataclass
class LayerReport:
    """One row of a QuantizationReport: a quantized layer or activation site."""
    name: str                      #: qualified name of the layer or activation site
    type: str                      #: layer type (Conv2d, ...) or functional op (add, cat, matmul)
    weights: Optional[str] = None  #: e.g. "SYMMETRIC 8b per-channel mse"; None: not quantized
    activations: Optional[str] = None  #: the output quantizer in the same form; None: none
    weight_sqnr_db: Optional[float] = None  #: SQNR of the quantized weight against the float one
    output_sqnr_db: Optional[float] = None  #: SQNR of the output on the first calibration batch


@dataclasses.dataclass
class QuantizationReport:
    """What a whole-model call did (model.qi_report): a row per quantized layer or activation
    site, the model output's SQNR against the float model, calibration figures and notes."""
    layers: List[LayerReport] = dataclasses.field(default_factory=list)  #: the rows, in model order
    model_output_sqnr_db: Optional[float] = None  #: SQNR of the model output (first batch)
    calibration_batches: int = 0  #: batches seen in calibration
    calibration_seconds: float = 0.0  #: wall time of calibration
    notes: List[str] = dataclasses.field(default_factory=list)  #: skipped layers, fallbacks

    @property
    def num_wrapped(self) -> int:
        """Layers whose weights are quantized."""
        return sum(1 for l in self.layers if l.weights is not None)

    @property
    def num_activation_quantizers(self) -> int:
        """Rows whose output is quantized."""
        return sum(1 for l in self.layers if l.activations is not None)

    def to_dict(self) -> Dict[str, Any]:
        """The report as plain dicts and lists (for JSON)."""
        return dataclasses.asdict(self)

    def plot(self, path: Optional[str] = None, title: Optional[str] = None):
        """Draws each row's weight and output SQNR (dB) as bars in model order, the model
        output's SQNR as a line; saves it to `path` (the format from its extension: .png, .svg,
        .pdf) when given. Returns the matplotlib Figure. Rows without a finite SQNR get no bar
        (an exact quantizer's infinite SQNR is drawn at the top, marked "inf")."""
        if not self.layers:
            raise ValueError("QuantizationReport.plot: the report has no layers to plot")
        import matplotlib
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        names = [l.name for l in self.layers]
        series = [("weights", [l.weight_sqnr_db for l in self.layers]),
                  ("output", [l.output_sqnr_db for l in self.layers])]
        finite = [v for _, vals in series for v in vals if v is not None and math.isfinite(v)]
        top = (max(finite) if finite else 0.0) + 5.0
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names) + 2.0), 4.0))
        for k, (label, vals) in enumerate(series):
            heights = [np.nan if v is None else (top if v == math.inf else v) for v in vals]
            ax.bar(x + (k - 0.5) * 0.4, heights, width=0.4, label=f"{label} SQNR")
            for i, v in enumerate(vals):
                if v == math.inf:
                    ax.annotate("inf", (x[i] + (k - 0.5) * 0.4, top), ha="center", va="bottom",
                                fontsize=7)
        if self.model_output_sqnr_db is not None and math.isfinite(self.model_output_sqnr_db):
            ax.axhline(self.model_output_sqnr_db, color="black", linestyle="--", linewidth=1,
                       label=f"model output {self.model_output_sqnr_db:.1f} dB")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=90, fontsize=7)
        ax.set_ylabel("SQNR (dB)")
        ax.set_title(title or f"{self.num_wrapped} layers with quantized weights, "
                              f"{self.num_activation_quantizers} activation quantizers")
        ax.legend(fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
            plt.close(fig)
        return fig

    def __str__(self) -> str:
        def num(v):
            return "-" if v is None else ("inf" if v == math.inf else f"{v:.1f}")
        rows = [("layer", "type", "weights", "activations", "W SQNR dB", "out SQNR dB")]
        rows += [(l.name, l.type, l.weights or "-", l.activations or "-", num(l.weight_sqnr_db),
                  num(l.output_sqnr_db)) for l in self.layers]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"{self.num_wrapped} layers with quantized weights, "
                     f"{self.num_activation_quantizers} activation quantizers; model output SQNR "
                     f"{num(self.model_output_sqnr_db)} dB; calibration: "
                     f"{self.calibration_batches} batches in {self.calibration_seconds:.2f} s")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def describe(spec: Optional[Dict[str, Any]]) -> Optional[str]:
    """A spec in one short phrase, for the table."""
    if spec is None:
        return None
    parts = [spec["method"], f"{spec['n_bits']}b"]
    if spec.get("per_channel"):
        parts.append("per-channel")
    parts.append(spec["calibration"])
    if spec.get("training"):
        parts.append(spec["training"])
    return " ".join(parts)


__all__ = ["LayerReport", "QuantizationReport", "sqnr_db", "describe"]
