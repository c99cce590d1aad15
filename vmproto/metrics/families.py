"""Small helpers to build prometheus_client metric families from plain counters.

Label values that are connection types use the wire name with spaces replaced by underscores
(`packetbuffer block` → `packetbuffer_block`), so every label value is a plain token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["counter", "gauge", "token", "version_text"]


def token(value: object) -> str:
    """A label value as a plain token: spaces become underscores."""
    return str(value).replace(" ", "_")


def counter(name: str, doc: str, labels: Iterable[str] = (),
            samples: Mapping[tuple[str, ...], float] | float | None = None) -> CounterMetricFamily:
    """A counter family named `name` (ending in `_total`). `samples`: a number (no labels) or a mapping
    label-values tuple → value."""
    labels = list(labels)
    fam = CounterMetricFamily(name, doc, labels=labels or None)
    _fill(fam, labels, samples)
    return fam


def gauge(name: str, doc: str, labels: Iterable[str] = (),
          samples: Mapping[tuple[str, ...], float] | float | None = None) -> GaugeMetricFamily:
    """A gauge family; `samples` as for `counter`."""
    labels = list(labels)
    fam = GaugeMetricFamily(name, doc, labels=labels or None)
    _fill(fam, labels, samples)
    return fam


def _fill(fam: CounterMetricFamily | GaugeMetricFamily, labels: list[str],
          samples: Mapping[tuple[str, ...], float] | float | None) -> None:
    if samples is None:
        return
    if not labels:
        if isinstance(samples, Mapping):
            raise TypeError(f"{fam.name}: labelled samples for a family without labels")
        fam.add_metric([], float(samples))
        return
    if not isinstance(samples, Mapping):
        raise TypeError(f"{fam.name}: a family with labels needs a mapping of samples")
    for values, value in sorted(samples.items()):
        fam.add_metric([str(v) for v in values], float(value))


def version_text(version: int) -> str:
    """`2026004000` → `2026.4.0` (the service credentials' sensor_version); `0` → `unknown`."""
    if version <= 0:
        return "unknown"
    return f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"
