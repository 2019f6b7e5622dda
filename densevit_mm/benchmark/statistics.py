"""Seed statistics of benchmark columns, and the calibration of a protocol against an oracle."""
import math
import statistics
from typing import Dict, List, Optional, Sequence

# A protocol separates backbones only if the oracle's lead over random init is this many
# times the seed-to-seed standard deviation.
MIN_GAP_OVER_STD = 3.


def mean_std(values: Sequence[float]) -> tuple:
    """``(mean, sample std)``; the std is nan for fewer than two values."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def format_values(values: Sequence[float]) -> str:
    """``'-'``, ``'41.2 (1)'`` for one run (no std to show), ``'41.2 ± 0.4 (3)'`` for
    several seeds: the number of runs is always there."""
    if not values:
        return '-'
    mean, std = mean_std(values)
    return f'{mean:.1f} ({len(values)})' if len(values) == 1 else \
        f'{mean:.1f} ± {std:.1f} ({len(values)})'


def calibrate(random: Dict[str, List[float]], oracle: Dict[str, List[float]],
              columns: Sequence[str]) -> List[dict]:
    """Per column with runs from both starts: the oracle gap (oracle mean - random mean), the
    seed std (pooled over the two starts), their ratio and whether it reaches
    ``MIN_GAP_OVER_STD``."""
    rows = []
    for column in columns:
        r, o = random.get(column, []), oracle.get(column, [])
        if not r or not o:
            continue
        gap = mean_std(o)[0] - mean_std(r)[0]
        stds = [mean_std(v)[1] for v in (r, o) if len(v) > 1]
        std = math.sqrt(sum(s * s for s in stds) / len(stds)) if stds else math.nan
        ratio = gap / std if std > 0 else math.nan
        rows.append(dict(column=column, random=format_values(r), oracle=format_values(o),
                         gap=gap, std=std, ratio=ratio,
                         passes=bool(ratio >= MIN_GAP_OVER_STD) if ratio == ratio else None))
    return rows


def calibration_markdown(rows: List[dict]) -> Optional[str]:
    if not rows:
        return None
    lines = ['| column | random init | oracle | oracle gap | seed std | gap / std | separates |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        verdict = {True: 'yes', False: 'no', None: 'needs seeds'}[r['passes']]
        # one run per start: no std, no ratio ('-', as the CSV leaves them empty)
        std, ratio = (f'{v:{spec}}' if v == v else '-' for v, spec in ((r['std'], '.2f'),
                                                                         (r['ratio'], '.1f')))
        lines.append(f"| {r['column']} | {r['random']} | {r['oracle']} | {r['gap']:.1f} | "
                     f"{std} | {ratio} | {verdict} |")
    return '\n'.join(lines) + '\n'
