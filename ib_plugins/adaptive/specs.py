"""The adaptive attacks by name: the registry, :func:`adaptive_spec` and :class:`MissingAttackConfigError`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ib_plugins.errors import IBPluginsError

_PREFIX = "adaptive:"

#: Read-only mapping ``name -> one-line description`` of the adaptive attacks.
ADAPTIVE_ATTACKS: Mapping[str, str] = MappingProxyType(
    {
        "pgd-ce": "L-inf PGD on cross-entropy (any-iterate success, restarts, gradient EOT)",
        "pgd-margin": "L-inf PGD on the corrected margin max_{j!=y} z_j - z_y",
        "pgd-ib": "L-inf PGD on CE + alpha*sum nHSIC(T,X) - beta*sum nHSIC(T,Y) through the model's IB layers",
        "pgd-entropic": "L-inf PGD on CE -/+ lambda*(E_T - sigma*E_T_ref)^2 through the entropic layers",
        "cw-l2": "Carlini-Wagner L2 with the corrected margin (true class masked by -inf)",
    }
)
_PGD = ("pgd-ce", "pgd-margin", "pgd-ib", "pgd-entropic")


class MissingAttackConfigError(IBPluginsError, ValueError):
    """An adaptive attack needs a configuration the model or checkpoint does not carry.

    Raised, for example, when ``pgd-ib`` is asked of a plain network without ``ib_config`` or of a
    checkpoint trained without the IB term; the message names what is missing.

    Example:
        >>> issubclass(MissingAttackConfigError, ValueError)
        True
    """


# --------------------------------------------------------------------------------------------------
# Names and specs
# --------------------------------------------------------------------------------------------------


def list_adaptive_attacks() -> list[str]:
    """Names of the adaptive attacks.

    Returns:
        The names, usable with :func:`adaptive_spec` and :func:`run_adaptive_attack`.

    Example:
        >>> list_adaptive_attacks()
        ['pgd-ce', 'pgd-margin', 'pgd-ib', 'pgd-entropic', 'cw-l2']
    """
    return list(ADAPTIVE_ATTACKS)


def _canonical_name(name: object) -> str:
    if not isinstance(name, str):
        names = ", ".join(map(repr, ADAPTIVE_ATTACKS))
        raise TypeError(f"name: expected a str (one of {names}), got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key.startswith(_PREFIX):
        key = key[len(_PREFIX):]
    if key not in ADAPTIVE_ATTACKS:
        raise ValueError(f"name: expected one of {', '.join(map(repr, ADAPTIVE_ATTACKS))}, got {name!r}")
    return key


def adaptive_spec(name: str, *, eps: float | None = None, label: str | None = None, **kwargs: Any) -> Any:
    """An :class:`~ib_plugins.evaluation.AttackSpec` for an adaptive attack.

    The spec's ``attack`` field is ``"adaptive:<name>"``; :func:`run_spec` and
    :func:`evaluate_specs` dispatch such specs to :func:`run_adaptive_attack` and every other spec
    to :func:`ib_plugins.evaluation.run_attack`.

    Args:
        name: a name from :func:`list_adaptive_attacks`.
        eps: the L∞ radius of the PGD attacks (required); must be None for ``cw-l2``.
        label: the name shown in reports (default ``name``).
        **kwargs: keyword arguments of :func:`run_adaptive_attack` (``steps``, ``alpha``,
            ``restarts``, ``eot_samples``, ``c``...), stored in the spec.

    Returns:
        The spec.

    Raises:
        ValueError: unknown name, missing/unexpected ``eps``, or an unknown keyword.

    Example:
        >>> s = adaptive_spec("cw-l2", steps=100, c=1.0)
        >>> s.norm, s.eps, s.attack, dict(s.kwargs)
        ('l2', None, 'adaptive:cw-l2', {'steps': 100, 'c': 1.0})
    """
    from ib_plugins.evaluation import AttackSpec

    key = _canonical_name(name)
    unknown = sorted(set(kwargs) - _RUN_KWARGS)
    if unknown:
        known = ", ".join(sorted(_RUN_KWARGS))
        raise ValueError(f"kwargs: expected keywords of run_adaptive_attack ({known}), got {unknown}")
    if key == "cw-l2":
        if eps is not None:
            raise ValueError(f"eps: cw-l2 is an unbounded attack, expected eps=None, got {eps!r}")
        return AttackSpec(label or key, "l2", None, kwargs, attack=_PREFIX + key)
    if eps is None:
        raise ValueError(f"eps: {key} needs an L-inf radius, got None")
    return AttackSpec(label or key, "linf", eps, kwargs, attack=_PREFIX + key)


def is_adaptive_spec(spec: Any) -> bool:
    """Whether an :class:`~ib_plugins.evaluation.AttackSpec` names an adaptive attack.

    Args:
        spec: an attack spec.

    Returns:
        True for specs made by :func:`adaptive_spec`.

    Example:
        >>> from ib_plugins.evaluation import AttackSpec
        >>> is_adaptive_spec(adaptive_spec("pgd-ce", eps=0.1)), is_adaptive_spec(AttackSpec("fgsm", "linf", 0.1))
        (True, False)
    """
    return isinstance(getattr(spec, "attack", None), str) and spec.attack.startswith(_PREFIX)


_RUN_KWARGS = frozenset(
    {"steps", "alpha", "random_start", "restarts", "eot_samples", "entropic_penalty", "c", "kappa", "lr",
     "search_steps", "any_iterate", "ib_penalty", "ce_reduction"}
)
