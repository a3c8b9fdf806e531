"""Firing rates, synaptic operations and energy of an SNN over an evaluation set, streamed batch by batch.

    act = Activity(net, ts)
    act.add_counts(sim.extra["spike_counts_at"])          # every batch: (B,) totals per layer at each T
    act.add_state(T, state)                               # optional, per checkpoint: per-neuron counts
    act.result(ann_macs)                                  # per T: rates, SOPs, energy (energy.energy_report)

Firing rate of a layer at T = spikes (either sign) / (neurons x T), averaged over the images; overall = all
spikes / (all neurons x T). Per-neuron counts (simulate(record_layers=True)) make the SOPs exact: each layer's
SOPs are sum over neurons of count x fan-out (energy.fanout_maps), accumulated per batch so no per-neuron array
outlives a batch; without them the SOPs use each layer's mean fan-out (exact when spikes are spread evenly).
Per-channel rates at the largest T show Spiking-YOLO's symptom of layer-wise normalization (most channels
nearly silent).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from snnc.ir.network import Network
from snnc.compiler.energy import energy_report, fanout_maps

QUIET_RATE = 0.01  # a channel firing below 1% of the steps counts as quiet


class Activity:
    def __init__(self, net: Network, ts: Sequence[int], maps: dict[str, np.ndarray] | None = None):
        self.net = net
        self.ts = sorted(int(t) for t in ts)
        self.layers = [l for l in net.layers if l.neuron is not None]
        self.neurons = {l.name: int(np.prod(l.shape)) for l in self.layers}
        self.encoding = str(net.input_encoding.get("kind", "direct"))
        self.images = 0
        self.spikes = {T: {name: 0.0 for name in self.neurons} for T in self.ts}
        self.exact_sops: dict[int, dict[str, float]] = {T: {} for T in self.ts}
        self.exact_images = {T: 0 for T in self.ts}
        self.input_spikes = {T: 0.0 for T in self.ts}
        self.channel_spikes = {l.name: np.zeros(l.shape[0]) for l in self.layers}
        self.channel_images = 0
        self._maps: dict[str, np.ndarray] | None = maps  # fanout_maps(net), computed on first use if None

    @property
    def maps(self) -> dict[str, np.ndarray]:
        if self._maps is None:
            self._maps = fanout_maps(self.net)
        return self._maps

    def add_counts(self, counts_at: Mapping[int, Mapping[str, np.ndarray]]) -> None:
        """One batch's SimResult.extra["spike_counts_at"]."""
        batch = 0
        for T in self.ts:
            for name, c in counts_at[T].items():
                if name in self.spikes[T]:
                    self.spikes[T][name] += float(np.sum(c))
                    batch = len(c)
        self.images += batch

    def add_state(self, T: int, state: Mapping[str, Mapping[str, Any]]) -> None:
        """One batch's per-neuron counts at checkpoint T (simulate(record_layers=True)'s state)."""
        maps = self.maps
        exact = self.exact_sops[T]
        batch = 0
        for layer in self.layers:
            d = state[layer.name]
            counts = d["pos"].astype(np.float64)
            if d["neg"] is not None:
                counts += d["neg"]
            batch = counts.shape[0]
            exact[layer.name] = exact.get(layer.name, 0.0) + float(counts.sum(axis=0) @ maps[layer.name].reshape(-1))
            if T == self.ts[-1]:
                self.channel_spikes[layer.name] += counts.reshape((batch, layer.shape[0], -1)).sum(axis=(0, 2))
        for layer in self.net.input_layers:
            if self.encoding == "rate" and layer.name in state:
                total = float(state[layer.name]["sum"].sum())
                self.input_spikes[T] += total
                exact[layer.name] = exact.get(layer.name, 0.0) + float(
                    state[layer.name]["sum"].sum(axis=0) @ maps[layer.name].reshape(-1))
        self.exact_images[T] += batch
        if T == self.ts[-1]:
            self.channel_images += batch

    def merge(self, other: "Activity") -> None:
        """Add another Activity's totals (one batch's, from a Ray worker). Merging per-batch partials in batch order
        performs the same float additions as adding the batches here directly, so the figures are identical."""
        self.images += other.images
        self.channel_images += other.channel_images
        for T in self.ts:
            for name, v in other.spikes[T].items():
                self.spikes[T][name] += v
            for name, v in other.exact_sops[T].items():
                self.exact_sops[T][name] = self.exact_sops[T].get(name, 0.0) + v
            self.exact_images[T] += other.exact_images[T]
            self.input_spikes[T] += other.input_spikes[T]
        for name, v in other.channel_spikes.items():
            self.channel_spikes[name] += v

    def result(self, ann_macs: int | None = None) -> dict[str, Any]:
        """Per T: firing rate per layer and overall, spikes and SOPs per image, energy (float and int)."""
        n = max(1, self.images)
        total_neurons = sum(self.neurons.values())
        rows = []
        for T in self.ts:
            per_image = {k: v / n for k, v in self.spikes[T].items()}
            rates = {k: per_image[k] / (self.neurons[k] * T) for k in per_image}
            spikes = dict(per_image)
            if self.encoding == "rate":
                spikes.update({l.name: self.input_spikes[T] / n for l in self.net.input_layers})
            exact = self.exact_images[T] == self.images and self.images > 0
            layer_sops = {k: v / n for k, v in self.exact_sops[T].items()} if exact else None
            if self.encoding == "rate" and not exact:
                report = None  # input spikes are only known per neuron (record_layers)
            else:
                report = energy_report(self.net, spikes, T, ann_macs, layer_sops=layer_sops, maps=self.maps)
            row: dict[str, Any] = {
                "T": T, "overall_rate": sum(per_image.values()) / (total_neurons * T),
                "layer_rates": rates, "spikes_per_image": sum(per_image.values()),
                "sops_exact": bool(exact)}
            if report is not None:
                row.update(sops=report["snn_sops"], analog_macs=report["snn_macs"], ann_macs=report["ann_macs"],
                           ann_macs_from=report["ann_macs_from"], energy_pj=report["energy_pj"],
                           layer_sops={r["layer"]: r["sops"] for r in report["layers"] if r["spikes"] is not None})
            rows.append(row)
        channels = {}
        if self.channel_images:
            t_max = self.ts[-1]
            for layer in self.layers:
                per_ch = self.channel_spikes[layer.name] / (self.channel_images * t_max *
                                                           (self.neurons[layer.name] // layer.shape[0]))
                channels[layer.name] = {"min": float(per_ch.min()), "median": float(np.median(per_ch)),
                                        "max": float(per_ch.max()),
                                        "quiet_fraction": float(np.mean(per_ch < QUIET_RATE))}
        return {"images": self.images, "neurons": self.neurons, "total_neurons": total_neurons, "T": rows,
                "channels_at_T": self.ts[-1] if channels else None, "channels": channels,
                "quiet_rate": QUIET_RATE}
