"""The variational autoencoder (Kingma and Welling, 2014, arXiv 1312.6114).

A generative model p(z) p(x | z): a latent code z ~ N(0, I), and a decoder that turns z into a
Bernoulli probability for every pixel. The posterior p(z | x) is intractable, so an encoder
q(z | x) = N(mu(x), diag sigma(x)^2) approximates it, and both are trained together on the
evidence lower bound (ELBO):

    log p(x) >= E_q[log p(x | z)] - KL(q(z | x) || p(z)) = ELBO(x)

Two forms, with ``encode``, ``decode``, ``forward`` and ``sample``, each also as a plain
autoencoder (``variational=False``: the same encoder and decoder, no ``logvar`` head, the code is
mu itself and there is no KL term; what the KL term buys is what the two differ by):

- ``variant="conv"``: two stride-2 convolutions down to 64x7x7 and two transposed ones back;
- ``variant="paper"``: the paper's MLP (its appendix C): one tanh hidden layer of 500 units in
  the encoder and in the decoder (784-500-latent-500-784), as in its MNIST experiments.

The loss and the evaluation are here too: ``gaussian_kl`` (the closed form of the paper's
appendix B), ``reconstruction_nll``, ``negative_elbo``, ``log_likelihood`` (the importance-
weighted bound of Burda et al., 2015) and ``active_units``. Everything is per image, in nats.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._api import register_model
from .blocks import check_choice, check_input, param_dtype


class VAEOutput(NamedTuple):
    """What ``VAE.forward`` returns: the decoder's Bernoulli logits (N, C, 28, 28), the encoder's
    mean and log-variance (N, latent), and the code z = mu + sigma * eps it decoded (N, latent).
    A plain autoencoder's has no log-variance (None) and z = mu."""

    logits: Tensor
    mu: Tensor
    logvar: Tensor | None
    z: Tensor


def reparameterise(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample of N(mu, sigma^2) that is a differentiable
    function of mu and sigma, so gradients reach the encoder (a plain ``.sample()`` would cut them)."""
    std = torch.exp(0.5 * logvar)  # the network predicts log sigma^2: any real number is a valid variance
    eps = torch.randn(std.shape, generator=generator, device=std.device, dtype=std.dtype)
    return mu + std * eps


class VAE(nn.Module):
    """A VAE for (C, 28, 28) images in [0, 1]. ``encoder`` maps an image to features h, the two
    linear heads ``mu`` and ``logvar`` map h to the posterior's parameters, ``decoder`` maps a code
    to logits. In training and in evaluation alike, ``forward`` decodes one sampled code per image
    (the ELBO is an expectation over q; its estimate needs a sample). ``decode(mu)`` gives the
    reconstruction at the posterior's mean. ``variational=False``: a plain autoencoder of the same
    shape, whose encoder gives one code per image (``mu``) and no ``logvar``."""

    task = "generative"

    def __init__(self, latent_size: int = 16, in_channels: int = 1, variant: Literal["conv", "paper"] = "conv",
                 hidden: int | None = None, width: int = 32, variational: bool = True) -> None:
        super().__init__()
        if isinstance(latent_size, bool) or not isinstance(latent_size, int) or latent_size < 1:
            raise ValueError(f"latent_size must be a positive whole number, got {latent_size!r}")
        check_choice("variant", variant, ("conv", "paper"))
        self.latent_size, self.variant, self.variational = latent_size, variant, bool(variational)
        self.input_shape = (in_channels, 28, 28)
        self.name = f"{'VAE' if variational else 'AE'}-{variant}-{latent_size}"
        pixels = in_channels * 28 * 28
        if variant == "paper":
            hidden = hidden or 500  # the paper's MNIST encoder and decoder: 500 tanh units each
            self.encoder = nn.Sequential(
                nn.Flatten(),  # (N, 1, 28, 28) -> (N, 784)
                nn.Linear(pixels, hidden), nn.Tanh(),  # -> (N, 500): h = tanh(W3 x + b3)
            )
            self.decoder = nn.Sequential(
                nn.Linear(latent_size, hidden), nn.Tanh(),  # (N, latent) -> (N, 500)
                nn.Linear(hidden, pixels),  # -> (N, 784): one logit per pixel; sigmoid gives p(x_i = 1 | z)
                nn.Unflatten(1, self.input_shape),  # -> (N, 1, 28, 28)
            )
        else:
            hidden = hidden or 256
            w = width
            self.encoder = nn.Sequential(
                nn.Conv2d(in_channels, w, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # -> (N, 32, 14, 14)
                nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # -> (N, 64, 7, 7)
                nn.Flatten(),  # -> (N, 3136)
                nn.Linear(2 * w * 7 * 7, hidden), nn.ReLU(inplace=True),  # -> (N, 256)
            )
            self.decoder = nn.Sequential(  # the encoder's mirror image
                nn.Linear(latent_size, hidden), nn.ReLU(inplace=True),  # (N, latent) -> (N, 256)
                nn.Linear(hidden, 2 * w * 7 * 7), nn.ReLU(inplace=True),  # -> (N, 3136)
                nn.Unflatten(1, (2 * w, 7, 7)),  # -> (N, 64, 7, 7)
                nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # -> (N, 32, 14, 14)
                nn.ConvTranspose2d(w, in_channels, 4, stride=2, padding=1),  # -> (N, 1, 28, 28) logits
            )
        self.mu = nn.Linear(hidden, latent_size)  # the posterior's mean (an autoencoder's code)
        # and its log-variance, log sigma^2 (an autoencoder has none: one code per image, not a distribution)
        self.logvar = nn.Linear(hidden, latent_size) if variational else None

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(mu, logvar) of q(z | x), each (N, latent); an autoencoder's (code, None)."""
        check_input(x, type(self).__name__, self.input_shape[0], size=28, dtype=param_dtype(self))
        h = self.encoder(x)
        return self.mu(h), self.logvar(h) if self.logvar is not None else None

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits (N, C, 28, 28) of p(x | z) for codes z (N, latent)."""
        if z.dim() != 2 or z.shape[1] != self.latent_size:
            got = tuple(z.shape)
            raise ValueError(f"{self.name} decodes codes of shape (N, {self.latent_size}); got {got}")
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        mu, logvar = self.encode(x)
        z = reparameterise(mu, logvar, generator) if logvar is not None else mu
        return VAEOutput(self.decode(z), mu, logvar, z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images from the model: z ~ N(0, I) decoded to pixel probabilities (N, C, 28, 28),
        the mean of p(x | z) (drawing 0/1 pixels from them gives the binary images it models). A plain
        autoencoder has no prior: it decodes N(0, I) codes all the same, which is how the chapter
        shows what goes wrong."""
        p = next(self.parameters())
        z = torch.randn(n, self.latent_size, generator=generator, dtype=p.dtype).to(p.device)
        return torch.sigmoid(self.decode(z))


@register_model
def vae(latent_size: int = 16, in_channels: int = 1, **kwargs) -> VAE:
    """A VAE for 28x28 images: ``variant="conv"`` (1,688,289 parameters at ``latent_size=16``) or
    ``variant="paper"``, Kingma and Welling's MLP (815,824 parameters at ``latent_size=20``);
    ``variational=False``: the plain autoencoder of the same shape."""
    return VAE(latent_size=latent_size, in_channels=in_channels, **kwargs)


# ---------------------------------------------------------------------------------------------
# The loss, per image, in nats
# ---------------------------------------------------------------------------------------------

LIKELIHOODS = ("bernoulli", "continuous_bernoulli")


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per image, (N, latent) -> (N,): the paper's appendix B,
    -KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2), in closed form (no sampling)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def reconstruction_nll(logits: Tensor, x: Tensor, likelihood: str = "bernoulli") -> Tensor:
    """-log p(x | z) per image, summed over pixels, (N, C, H, W) -> (N,).

    ``"bernoulli"``: x must be 0 or 1; -log p = sum_i BCE(sigmoid(logit_i), x_i), a proper
    log-probability. ``"continuous_bernoulli"`` (Loaiza-Ganem and Cunningham, 2019): x anywhere in
    [0, 1], with the normalising constant log C(lambda) that plain BCE on grey levels leaves out."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be {' or '.join(map(repr, LIKELIHOODS))}, got {likelihood!r}")
    _check_pixels(x)
    logits, x = logits.float().flatten(1), x.float().flatten(1)
    if likelihood == "continuous_bernoulli":
        return -torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x).sum(1)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)


def _check_pixels(x: Tensor) -> None:
    """A Bernoulli scores pixels in [0, 1]: normalised images (mean 0, std 1) would give a negative
    "NLL" and plausible-looking ELBOs, so they are refused."""
    if x.numel() and not x.is_meta:
        low, high = (float(v) for v in torch.aminmax(x.detach().float()))
        if low < 0 or high > 1:
            raise ValueError(f"the likelihood is of pixels in [0, 1]; these range from {low:.3g} to {high:.3g} "
                             "(normalised images?): use x.float() / 255, or cnn_book.data.binarize's images")


def negative_elbo(output: VAEOutput, x: Tensor, beta: float = 1.0,
                  likelihood: str = "bernoulli") -> tuple[Tensor, Tensor, Tensor]:
    """(loss, reconstruction, kl), each the mean over the batch of a per-image sum in nats:
    loss = reconstruction + beta * kl. With beta = 1 it is the negative ELBO, an upper bound on
    -log p(x); summing over pixels and latents (not averaging) is what keeps that meaning. A plain
    autoencoder's output (no logvar) has no KL term: its loss is the reconstruction, and no bound."""
    rec = reconstruction_nll(output.logits, x, likelihood)
    if output.logvar is None:
        return rec.mean(), rec.mean(), rec.new_zeros(())
    kl = gaussian_kl(output.mu.float(), output.logvar.float())
    return (rec + beta * kl).mean(), rec.mean(), kl.mean()


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def _normal_log_prob(z: Tensor, mu: Tensor | float = 0.0, logvar: Tensor | float = 0.0) -> Tensor:
    """log N(z; mu, sigma^2), summed over the last dimension."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return (-0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp())).sum(-1)


@torch.no_grad()
def importance_weights(model: nn.Module, x: Tensor, k: int = 1000, chunk: int = 100,
                       generator: torch.Generator | None = None) -> Tensor:
    """log w_j = log p(x | z_j) + log p(z_j) - log q(z_j | x) for k codes z_j ~ q(z | x) per image,
    (k, N). ``model`` needs ``encode(x) -> (mu, logvar)`` and ``decode(z) -> Bernoulli logits``;
    ``chunk`` codes per image are decoded at a time."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a whole number of at least 1, got {k!r}")
    _check_pixels(x)
    was = model.training
    model.eval()
    mu, logvar = model.encode(x)
    if logvar is None:
        model.train(was)
        raise ValueError(f"{getattr(model, 'name', 'this model')} is a plain autoencoder: it has no posterior "
                         "q(z | x) and no prior, so no likelihood to estimate (train a VAE for that)")
    mu, logvar = mu.float(), logvar.float()
    n = len(x)
    target = x.float().flatten(1)
    log_w = []
    for start in range(0, k, chunk):
        s = min(chunk, k - start)
        eps = torch.randn((s, *mu.shape), generator=generator).to(mu.device)
        z = mu + (0.5 * logvar).exp() * eps  # (s, N, latent)
        logits = model.decode(z.flatten(0, 1)).float().view(s, n, -1)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, target.expand(s, -1, -1), reduction="none").sum(-1)
        log_w.append(log_px_z + _normal_log_prob(z) - _normal_log_prob(z, mu, logvar))
    model.train(was)
    return torch.cat(log_w)


def log_likelihood(model: nn.Module, x: Tensor, k: int = 1000, chunk: int = 100,
                   generator: torch.Generator | None = None) -> Tensor:
    """The importance-weighted estimate of log p(x) per image (Burda et al., 2015), (N,) in nats:

        L_k = log (1/k) sum_{j=1..k} p(x | z_j) p(z_j) / q(z_j | x),   z_j ~ q(z | x).

    L_1 is a one-sample estimate of the ELBO; E[L_k] grows with k towards log p(x), and every
    L_k equals log p(x) when q is the true posterior (all weights are then p(x))."""
    return iwae_bound(importance_weights(model, x, k, chunk, generator))


def iwae_bound(log_w: Tensor, k: int | None = None) -> Tensor:
    """L_k per image from log-weights (K, N), using the first ``k`` of them (all by default):
    logsumexp over the samples minus log k, which never overflows as exp(log w) would."""
    if k is None:
        k = len(log_w)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(log_w):
        raise ValueError(f"k must be a whole number from 1 to the {len(log_w)} samples given, got {k!r}")
    return torch.logsumexp(log_w[:k], 0) - math.log(k)


@torch.no_grad()
def active_units(model: nn.Module, x: Tensor, threshold: float = 1e-2, batch_size: int = 1000) -> tuple[int, Tensor]:
    """(how many latent units are active, the activity of each): unit u is active when
    Cov_x(E_q[z_u]) = the variance over the images ``x`` of mu_u(x) exceeds ``threshold``
    (Burda et al., 2015, section 5.2: 10^-2). An inactive unit's posterior is the same for every
    image: the decoder cannot read anything from it (posterior collapse)."""
    was = model.training
    model.eval()
    mus = torch.cat([model.encode(x[i : i + batch_size])[0].float() for i in range(0, len(x), batch_size)])
    model.train(was)
    activity = mus.var(0, unbiased=False).cpu()
    return int((activity > threshold).sum()), activity
