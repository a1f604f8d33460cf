"""Meta-learned initializations for classical solvers (issue: a SIREN φ_θ starts an
unrolled solver f; the inner loop fits θ to ‖A f(φ_θ) − y‖², the outer loop learns θ's
start). The solvers are ``metadip.classical.solvers``; they run after the network when
an init's ``NetConfig.solver`` names one, so ``reconstruct``, ``meta_gradient`` and
``metadip train`` need nothing else. RED's denoiser is ``metadip.classical.dncnn``."""

from metadip.classical.solvers import check_solver_operator, gd, red, solver_for

__all__ = ["check_solver_operator", "gd", "red", "solver_for"]
