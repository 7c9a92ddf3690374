"""An excited hydrogen atom: ``q_t = |psi(x, t)|^2`` carried by the Bohmian velocity (AM's quantum experiment).

Atomic units (``hbar = m_e = e = 1``, Bohr radius 1). ``psi(x, 0)`` is a normalised superposition of eigenstates
``psi_nlm = R_nl(r) Y_lm(theta, phi)``, each evolving with ``exp(-i E_n tau)``, ``E_n = -1 / (2 n^2)``. With
``hbar = m = 1`` the Bohmian velocity ``v = Im(grad psi / psi) = grad arg psi`` carries ``|psi|^2`` (the continuity
equation of the Schrodinger equation). It is the gradient of the phase only locally: the phase winds by 2 pi around
each vortex line (a node line of ``psi``; the default state has one, turning with the dipole, beyond which the phase
winds around the z axis as the ``m = -1`` state's does). Action Matching learns the gradient of a single-valued
``s``: the minimal-action field carrying the same ``|psi_t|^2``, i.e. the L2(|psi_t|^2) projection of ``v`` onto
gradients; the rest, a circulation with ``div(|psi|^2 w) = 0``, moves no density and no data can reveal it. Fitting
``grad s`` to ``v`` at ``t = 0`` with a 3 x 128 MLP on 200,000 exact draws leaves a relative L2 error of 0.63
(``E|grad s|^2 = 0.0148`` of ``E|v|^2 = 0.0251``): ``velocity_rel_error`` against the Bohmian field cannot go much
below that for any AM model; the MMD between pushed and observed cells is the measure of the learned dynamics.

The simulator's time ``t`` is physical time ``tau`` over ``time_scale`` (``tau = time_scale * t``; default 1, atomic
units; the AM paper's ``t in [0, 1]`` is ``time_scale = 14000``), and its velocity is ``time_scale * v`` in units of
``x`` per unit ``t``. The two are the same problem for AM up to the potential's scale (``s`` in atomic units has the
size of a phase, in the paper's units 14,000 times that), which is why the configs keep atomic units.

Everything is closed form in float64: ``R_nl`` from the associated Laguerre polynomial, ``Y_lm`` (Condon-Shortley
phase, ``Y_{l,-m} = (-1)^m conj(Y_lm)``, the convention of ``scipy.special.sph_harm_y``) from the derivatives of the
Legendre polynomial, and their gradients analytically in spherical coordinates (finite on the z axis and at the
origin), so the velocity is exact to rounding, not a finite difference.

Nodes: ``v`` is ``Im(conj(psi) grad psi) / |psi|^2``; the flux ``Im(conj(psi) grad psi)`` is smooth everywhere, the
division is not. Where ``|psi|^2`` is exactly 0 (or underflows) the velocity is undefined and returned as 0. A node of
a real factor of ``psi`` (the ``z = 0`` plane of the default state, odd in ``z``) cancels in the ratio; near a
vortex line ``|v| ~ 1 / distance``, which samples of ``|psi|^2 ~ distance^2`` reach with a small probability.

Samples. ``sample_times`` draws i.i.d. from ``|psi_t|^2`` exactly, by rejection from the mixture
``sum_j |a_j| |psi_j|^2 / sum_j |a_j|`` (``|psi_t|^2 <= (sum |a_j|) sum_j |a_j| |psi_j|^2`` by Cauchy-Schwarz, so
the acceptance rate is ``sum |a_j|^2 / (sum |a_j|)^2``: 1/2 for two equal weights), each ``|psi_nlm|^2`` drawn
exactly (radius: a finite mixture of Gamma laws with rejection on the Laguerre factor; ``cos theta``: rejection
from uniform under the exact maximum of its polynomial density; ``phi``: uniform). ``snapshots`` builds the
training frames as the paper does (``frames='transport'``): ``|psi_0|^2`` by random-walk Metropolis, then every
particle moved along the Bohmian velocity, but by classical RK4 with ``substeps`` steps per frame interval, not the
paper's one Euler step of 14 atomic units, which leaves ``|psi_t|^2`` within a few frames (measured on 3,000 exact
draws over 10 frames: median path error 3.1 au and ``<r>`` down from 7.74 to 6.11, where it is constant). With 8
RK4 steps per frame the median path error over 10 frames is 7e-6 au and, over all 1,000 frames, ``<r>``, the
rotating dipole ``<x>, <y>`` and the second moments of 2,000 transported particles stay within their sampling noise
of exact draws; the 1 % of paths that pass close to a vortex line (where ``|v| ~ 1 / distance``) are not followed
exactly by any fixed step, and those moments show no drift from them (4 steps per frame do drift, by 2-3 standard
errors). ``frames='independent'`` draws each frame exactly and independently instead (the same marginals, no
shared particles, a few times faster).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.polynomial import Legendre, Polynomial
from numpy.polynomial import polynomial as P

FRAMES = ("transport", "independent")
INITIALS = ("metropolis", "exact")


def laguerre_coefficients(k: int, alpha: int) -> np.ndarray:
    """Power-series coefficients of the associated Laguerre polynomial ``L_k^alpha`` (``L_k^alpha(0) > 0``)."""
    return np.array(
        [(-1) ** i * math.comb(k + alpha, k - i) / math.factorial(i) for i in range(k + 1)], dtype=np.float64
    )


class Eigenstate:
    """``psi_nlm(x) = R_nl(r) Y_lm(theta, phi)`` and its gradient, in Cartesian coordinates."""

    def __init__(self, n: int, l: int, m: int) -> None:  # noqa: E741 (the quantum number's name)
        if not (n >= 1 and 0 <= l < n and -l <= m <= l):
            raise ValueError(f"hydrogen: quantum numbers (n, l, m) = ({n}, {l}, {m}) need n >= 1, 0 <= l < n, |m| <= l")
        self.n, self.l, self.m = int(n), int(l), int(m)
        self.energy = -1.0 / (2 * n**2)
        self.laguerre = laguerre_coefficients(n - l - 1, 2 * l + 1)
        self.radial_norm = math.sqrt((2 / n) ** 3 * math.factorial(n - l - 1) / (2 * n * math.factorial(n + l)))
        am = abs(m)
        # P_l^|m|(u) = (-1)^|m| (1 - u^2)^(|m|/2) Q(u) with Q = d^|m| P_l / du^|m| (Condon-Shortley phase);
        # Y_lm = K P_l^m e^{i m phi} for m >= 0 and Y_{l,-|m|} = (-1)^|m| conj(Y_{l|m|}).
        self.legendre = Legendre.basis(l).deriv(am).convert(kind=Polynomial).coef if am <= l else np.zeros(1)
        self.legendre_slope = P.polyder(self.legendre) if len(self.legendre) > 1 else np.zeros(1)
        norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - am) / math.factorial(l + am))
        self.angular_norm = norm * ((-1) ** am if m >= 0 else 1.0)

    def radial(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``R_nl(r)`` and ``dR_nl / dr``."""
        n, l = self.n, self.l  # noqa: E741 (the quantum number's name)
        rho = 2 * r / n
        lag, lag_slope = P.polyval(rho, self.laguerre), P.polyval(rho, P.polyder(self.laguerre))
        decay = np.exp(-rho / 2)
        power = rho**l
        value = decay * power * lag
        slope = decay * (power * lag_slope - 0.5 * power * lag)
        if l > 0:
            slope = slope + decay * l * rho ** (l - 1) * lag
        return self.radial_norm * value, self.radial_norm * (2 / n) * slope

    def values_and_gradients(self, geometry: dict) -> tuple[np.ndarray, np.ndarray]:
        """``psi_nlm`` (complex, ``(N,)``) and its gradient (``(N, 3)``) at the points described by ``geometry``."""
        g, am = geometry, abs(self.m)
        r, u, s = g["r"], g["u"], g["sin"]
        radial, radial_slope = self.radial(r)
        q, q_slope = P.polyval(u, self.legendre), P.polyval(u, self.legendre_slope)
        s_pow = s**am
        angular = s_pow * q  # sin^|m| theta Q(cos theta)
        # d/dtheta of sin^|m| Q(cos theta) and sin^(|m| - 1) Q: finite on the axis for every m.
        d_theta = -(s ** (am + 1)) * q_slope
        over_sin = np.zeros_like(r)
        if am > 0:
            over_sin = s ** (am - 1) * q
            d_theta = d_theta + am * over_sin * u
        phase = g["e_iphi"] ** self.m if self.m >= 0 else np.conj(g["e_iphi"]) ** am
        coef = self.angular_norm * phase
        value = coef * radial * angular
        inv_r = 1.0 / r
        grad = (
            (radial_slope * angular)[:, None] * g["e_r"]
            + (radial * d_theta * inv_r)[:, None] * g["e_theta"]
            + (1j * self.m * radial * over_sin * inv_r)[:, None] * g["e_phi"]
        )
        return value, coef[:, None] * grad

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` exact draws from ``|psi_nlm|^2`` (Cartesian)."""
        r = self._sample_radius(n, rng)
        u = self._sample_cos_theta(n, rng)
        phi = rng.uniform(0, 2 * np.pi, n)
        s = np.sqrt(np.clip(1 - u * u, 0, None))
        return np.column_stack([r * s * np.cos(phi), r * s * np.sin(phi), r * u])

    def _sample_radius(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``r^2 R_nl^2 ~ rho^(2l+2) e^-rho L(rho)^2`` (``rho = 2r/n``): ``L^2 <= (sum |a_i| rho^i)^2 = sum b_k rho^k``
        makes the envelope a mixture of Gamma(2l + 3 + k) laws; accept with ``L^2 / (sum |a_i| rho^i)^2``."""
        a = np.abs(self.laguerre)
        b = np.convolve(a, a)
        shapes = 2 * self.l + 3 + np.arange(len(b))
        log_w = np.log(np.where(b > 0, b, 1e-300)) + np.array([math.lgamma(k) for k in shapes])
        weights = np.exp(log_w - log_w.max()) * (b > 0)
        weights /= weights.sum()
        out = np.empty(n)
        todo = np.arange(n)
        while len(todo):
            rho = rng.gamma(shapes[rng.choice(len(b), len(todo), p=weights)])
            accept = rng.random(len(todo)) * P.polyval(rho, a) ** 2 <= P.polyval(rho, self.laguerre) ** 2
            out[todo[accept]] = rho[accept]
            todo = todo[~accept]
        return out * self.n / 2

    @cached_property
    def _cos_theta_bound(self) -> float:
        """The maximum over [-1, 1] of ``g(u) = (1 - u^2)^|m| Q(u)^2``: at an end or a real root of ``g'``."""
        g = P.polymul(P.polypow([1.0, 0.0, -1.0], abs(self.m)), P.polymul(self.legendre, self.legendre))
        roots = P.polyroots(P.polyder(g)) if len(g) > 2 else np.zeros(0)
        candidates = np.concatenate([[-1.0, 1.0], roots[np.abs(roots.imag) < 1e-9].real.clip(-1, 1)])
        return float(P.polyval(candidates, g).max()) * (1 + 1e-9)

    def _sample_cos_theta(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``cos theta`` with density ``(1 - u^2)^|m| Q(u)^2`` on [-1, 1]: rejection from uniform under its maximum."""
        out = np.empty(n)
        todo = np.arange(n)
        bound = self._cos_theta_bound
        while len(todo):
            u = rng.uniform(-1, 1, len(todo))
            density = (1 - u * u) ** abs(self.m) * P.polyval(u, self.legendre) ** 2
            accept = rng.random(len(todo)) * bound <= density
            out[todo[accept]] = u[accept]
            todo = todo[~accept]
        return out


def geometry(x: np.ndarray) -> dict:
    """Spherical coordinates and unit vectors of Cartesian points; on the z axis ``phi = 0`` (any value gives the
    same gradient there, as the terms that depend on it vanish or combine into a smooth field)."""
    x = np.asarray(x, dtype=np.float64)
    rho = np.hypot(x[:, 0], x[:, 1])
    r = np.maximum(np.sqrt(rho * rho + x[:, 2] ** 2), 1e-300)
    on_axis = rho == 0
    safe_rho = np.where(on_axis, 1.0, rho)
    cos_phi, sin_phi = np.where(on_axis, 1.0, x[:, 0] / safe_rho), np.where(on_axis, 0.0, x[:, 1] / safe_rho)
    u, s = x[:, 2] / r, rho / r
    zeros = np.zeros_like(r)
    return {
        "r": r,
        "u": u,
        "sin": s,
        "e_iphi": cos_phi + 1j * sin_phi,
        "e_r": x / r[:, None],
        "e_theta": np.column_stack([u * cos_phi, u * sin_phi, -s]),
        "e_phi": np.column_stack([-sin_phi, cos_phi, zeros]),
    }


@dataclass(frozen=True)
class Hydrogen:
    """Bohmian dynamics of a superposition of hydrogen eigenstates; ``t`` is physical time over ``time_scale``.

    ``states``: the ``(n, l, m)`` of each eigenstate; ``coefficients``: their (real) amplitudes at ``t = 0``,
    normalised. ``frames``: how ``snapshots`` (the training data) are made: ``transport`` (the paper: one
    population moved along ``v`` from frame to frame) or ``independent`` (exact i.i.d. draws per frame).
    ``initial``: the first frame of ``transport``, by ``metropolis`` (the paper: random-walk Metropolis, proposal
    std ``mcmc_step``, ``mcmc_steps`` steps from ``N(0, mcmc_start_scale^2 I)``) or ``exact`` draws.
    ``substeps``: RK4 steps per frame interval of the transport.
    """

    states: tuple[tuple[int, int, int], ...] = ((3, 2, -1), (2, 1, 0))
    coefficients: tuple[float, ...] = (1.0, 1.0)
    time_scale: float = 1.0
    frames: str = "transport"
    initial: str = "metropolis"
    mcmc_steps: int = 5000
    mcmc_step: float = 10.0
    mcmc_start_scale: float = 50.0
    substeps: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "states", tuple(tuple(int(q) for q in s) for s in self.states))
        object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))
        if any(len(s) != 3 for s in self.states) or not self.states:
            raise ValueError(f"hydrogen: states must be a non-empty list of [n, l, m], got {self.states}")
        if len(set(self.states)) != len(self.states):
            raise ValueError(f"hydrogen: states {self.states} repeat an eigenstate")
        if len(self.coefficients) != len(self.states) or not any(self.coefficients):
            raise ValueError(
                f"hydrogen: coefficients {self.coefficients} must give one amplitude per state ({len(self.states)}), "
                "not all zero"
            )
        if self.frames not in FRAMES:
            raise ValueError(f"hydrogen: frames must be one of {FRAMES}, got {self.frames!r}")
        if self.initial not in INITIALS:
            raise ValueError(f"hydrogen: initial must be one of {INITIALS}, got {self.initial!r}")
        if not (self.time_scale > 0 and self.substeps >= 1 and self.mcmc_steps >= 0 and self.mcmc_step > 0):
            raise ValueError("hydrogen: time_scale, substeps and mcmc_step must be > 0, mcmc_steps >= 0")
        for s in self.states:
            Eigenstate(*s)  # checks the quantum numbers

    @property
    def dim(self) -> int:
        return 3

    @cached_property
    def eigenstates(self) -> list[Eigenstate]:
        return [Eigenstate(*s) for s in self.states]

    @cached_property
    def amplitudes(self) -> np.ndarray:
        c = np.asarray(self.coefficients, dtype=np.float64)
        return c / np.linalg.norm(c)

    @cached_property
    def energies(self) -> np.ndarray:
        return np.array([e.energy for e in self.eigenstates])

    def _phases(self, t) -> np.ndarray:
        """``a_j exp(-i E_j tau)``: ``(states,)`` for one time, ``(N, states)`` for one time per point."""
        t = np.asarray(t, dtype=np.float64)
        if t.ndim == 0:
            return self.amplitudes * np.exp(-1j * self.time_scale * float(t) * self.energies)
        return self.amplitudes * np.exp(-1j * self.time_scale * t[:, None] * self.energies)

    def _components(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each eigenstate's value ``(N, states)`` and gradient ``(N, states, 3)``."""
        geo = geometry(x)
        parts = [e.values_and_gradients(geo) for e in self.eigenstates]
        return np.stack([p[0] for p in parts], 1), np.stack([p[1] for p in parts], 1)

    def wavefunction(self, x: np.ndarray, t) -> tuple[np.ndarray, np.ndarray]:
        """``psi(x, t)`` and ``grad psi`` at ``t`` (a number, or one time per point)."""
        values, grads = self._components(x)
        c = np.broadcast_to(self._phases(t), values.shape)
        return (values * c).sum(1), np.einsum("nj,njd->nd", c, grads)

    def density(self, x: np.ndarray, t) -> np.ndarray:
        """``|psi(x, t)|^2``."""
        values = self._values(x)
        psi = (values * self._phases(t)).sum(1)
        return psi.real**2 + psi.imag**2

    def _values(self, x: np.ndarray) -> np.ndarray:
        """Each eigenstate's value only, ``(N, states)`` (what the density and the samplers need)."""
        geo = geometry(x)
        out = []
        for e in self.eigenstates:
            radial, _ = e.radial(geo["r"])
            phase = geo["e_iphi"] ** e.m if e.m >= 0 else np.conj(geo["e_iphi"]) ** abs(e.m)
            angular = geo["sin"] ** abs(e.m) * P.polyval(geo["u"], e.legendre)
            out.append(e.angular_norm * phase * radial * angular)
        return np.stack(out, 1)

    def velocity(self, x: np.ndarray, t) -> np.ndarray:
        """The Bohmian velocity ``time_scale * Im(conj(psi) grad psi) / |psi|^2`` (0 where ``|psi|^2`` is 0)."""
        psi, grad = self.wavefunction(x, t)
        flux = (np.conj(psi)[:, None] * grad).imag
        dens = psi.real**2 + psi.imag**2
        safe = np.where(dens > 0, dens, 1.0)
        return np.where((dens > 0)[:, None], self.time_scale * flux / safe[:, None], 0.0)

    # -- samples ------------------------------------------------------------------------------------------------
    def sample(self, t: float, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.sample_times(np.full(n, float(t)), rng)

    def sample_times(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One exact draw of ``|psi_t|^2`` for each entry of ``t`` (rejection from the eigenstates' mixture)."""
        t = np.asarray(t, dtype=np.float64)
        weights = np.abs(self.amplitudes)
        total = weights.sum()
        out = np.empty((len(t), 3))
        todo = np.arange(len(t))
        while len(todo):
            which = rng.choice(len(weights), len(todo), p=weights / total)
            x = np.empty((len(todo), 3))
            for j, state in enumerate(self.eigenstates):
                rows = which == j
                x[rows] = state.sample(int(rows.sum()), rng)
            values = self._values(x)
            psi = (values * self._phases(t[todo])).sum(1)
            envelope = total * (np.abs(values) ** 2 * weights).sum(1)
            accept = rng.random(len(todo)) * envelope <= psi.real**2 + psi.imag**2
            out[todo[accept]] = x[accept]
            todo = todo[~accept]
        return out

    def metropolis(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """``n`` chains of random-walk Metropolis on ``|psi_0|^2`` (the paper's protocol); the final states and the
        mean acceptance rate."""
        x = self.mcmc_start_scale * rng.standard_normal((n, 3))
        log_p = np.log(self.density(x, 0.0) + 1e-300)
        accepted = 0
        for _ in range(self.mcmc_steps):
            proposal = x + self.mcmc_step * rng.standard_normal((n, 3))
            log_q = np.log(self.density(proposal, 0.0) + 1e-300)
            accept = np.log(rng.random(n)) < log_q - log_p
            x[accept], log_p[accept] = proposal[accept], log_q[accept]
            accepted += int(accept.sum())
        return x, accepted / max(1, n * self.mcmc_steps)

    def transport(self, x0: np.ndarray, times, substeps: int | None = None) -> np.ndarray:
        """Positions ``(len(times), N, 3)`` of particles at ``times[0]`` moved along the Bohmian velocity by RK4,
        ``substeps`` steps per interval."""
        steps = self.substeps if substeps is None else substeps
        out = np.empty((len(times), *x0.shape))
        x = np.asarray(x0, dtype=np.float64).copy()
        out[0] = x
        for k in range(1, len(times)):
            t, h = float(times[k - 1]), (float(times[k]) - float(times[k - 1])) / steps
            for _ in range(steps):
                k1 = self.velocity(x, t)
                k2 = self.velocity(x + 0.5 * h * k1, t + 0.5 * h)
                k3 = self.velocity(x + 0.5 * h * k2, t + 0.5 * h)
                k4 = self.velocity(x + h * k3, t + h)
                x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
                t += h
            out[k] = x
        return out

    def snapshots(self, times, n: int, rng: np.random.Generator) -> np.ndarray:
        """The training frames ``(len(times), n, 3)``: one population transported, or independent exact draws."""
        times = np.asarray(times, dtype=np.float64)
        if np.any(np.diff(times) <= 0):
            raise ValueError(f"hydrogen: the frames' times must increase, got {times.tolist()[:5]}...")
        if self.frames == "independent":
            return np.stack([self.sample(float(t), n, rng) for t in times])
        if self.initial == "metropolis":
            if times[0] != 0:
                x0 = self.sample(float(times[0]), n, rng)  # Metropolis targets |psi_0|^2 only
            else:
                x0, _ = self.metropolis(n, rng)
        else:
            x0 = self.sample(float(times[0]), n, rng)
        return self.transport(x0, times)
