"""The VAE: its two forms, the loss in nats (checked against torch.distributions), the importance-
weighted bound on models whose log-likelihood is known, and the generative task through fit."""

import math

import pytest
import torch
from torch import nn

from cnn_book import results, train
from cnn_book.data import BinaryImages, ImageData, binarize
from cnn_book.inspect import count_parameters, summary
from cnn_book.models import get_model
from cnn_book.models.vae import (
    VAEOutput,
    active_units,
    gaussian_kl,
    importance_weights,
    iwae_bound,
    log_likelihood,
    negative_elbo,
    reconstruction_nll,
    reparameterise,
)
from cnn_book.tasks import get_task


def _linear(i, o):
    return i * o + o


def test_parameter_counts_follow_from_the_layers():
    conv = get_model("vae", latent_size=16)
    encoder = 16 * 32 + 32 + 16 * 32 * 64 + 64 + _linear(64 * 7 * 7, 256)  # two 4x4 convs, then 3136 -> 256
    heads = 2 * _linear(256, 16)  # mu and log sigma^2
    decoder = _linear(16, 256) + _linear(256, 3136) + 16 * 64 * 32 + 32 + 16 * 32 * 1 + 1
    assert count_parameters(conv) == encoder + heads + decoder == 1_688_289
    paper = get_model("vae", variant="paper", latent_size=20)  # 784-500-20, as in the paper's section 5
    assert count_parameters(paper) == _linear(784, 500) + 2 * _linear(500, 20) + _linear(20, 500) + _linear(500, 784)
    assert count_parameters(paper) == 815_824
    # each latent costs a row of both heads (2 x 257) and a column of the decoder's first layer (256)
    assert count_parameters(get_model("vae", latent_size=2)) == 1_688_289 - 14 * (2 * 257 + 256)
    assert paper.encoder[2].__class__ is nn.Tanh and paper.decoder[1].__class__ is nn.Tanh  # appendix C: tanh


@pytest.mark.parametrize("variant", ["conv", "paper"])
@pytest.mark.parametrize("latent", [2, 16])
def test_shapes_of_encode_decode_forward_and_sample(variant, latent):
    torch.manual_seed(0)
    m = get_model("vae", variant=variant, latent_size=latent)
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (5, latent)
    out = m(x)
    assert isinstance(out, VAEOutput) and out.logits.shape == x.shape and out.z.shape == (5, latent)
    assert m.decode(mu).shape == x.shape
    s = m.sample(7)
    assert s.shape == (7, 1, 28, 28) and 0 <= s.min() and s.max() <= 1  # pixel probabilities
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(m.sample(2, generator=g1), m.sample(2, generator=g2))
    out.logits.sum().backward()  # the decoder's gradient reaches the encoder through z = mu + sigma * eps
    assert all(p.grad is not None for p in m.parameters())


def test_other_channels():
    m = get_model("vae", latent_size=3, in_channels=3)
    assert m(torch.rand(2, 3, 28, 28)).logits.shape == (2, 3, 28, 28) and m.input_shape == (3, 28, 28)


def test_bad_input_is_refused_in_the_reader_s_words():
    m = get_model("vae")
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, 28, 28\); got \(N, 1, 32, 32\)"):
        m(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"convert with x.float\(\) / 255"):
        m(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"decodes codes of shape \(N, 16\); got \(3, 2\)"):
        m.decode(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="latent_size must be a positive whole number, got 0"):
        get_model("vae", latent_size=0)
    with pytest.raises(ValueError, match="variant must be 'conv' or 'paper'"):
        get_model("vae", variant="mlp")
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_classes'"):  # a VAE has no classes
        get_model("vae", num_classes=10)


def test_the_closed_form_kl_is_torch_distributions_kl():
    torch.manual_seed(0)
    mu, logvar = torch.randn(64, 16, dtype=torch.float64), torch.randn(64, 16, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    assert torch.allclose(gaussian_kl(mu, logvar), torch.distributions.kl_divergence(q, p).sum(1))
    assert torch.equal(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))  # q = prior: 0


def test_the_reconstruction_term_is_a_log_probability():
    torch.manual_seed(0)
    logits = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    x = torch.bernoulli(torch.full_like(logits, 0.3))
    bern = torch.distributions.Bernoulli(logits=logits)
    assert torch.allclose(reconstruction_nll(logits, x), -bern.log_prob(x).flatten(1).sum(1).float())
    grey = torch.rand_like(logits)
    cb = torch.distributions.ContinuousBernoulli(logits=logits)
    assert torch.allclose(reconstruction_nll(logits, grey, "continuous_bernoulli"),
                          -cb.log_prob(grey).flatten(1).sum(1).float(), rtol=1e-5)
    # on grey levels BCE leaves out log C(lambda) > 0 per pixel: it is no log-density
    assert (reconstruction_nll(logits, grey) - reconstruction_nll(logits, grey, "continuous_bernoulli") > 0).all()
    with pytest.raises(ValueError, match="likelihood must be 'bernoulli' or 'continuous_bernoulli'"):
        reconstruction_nll(logits, x, "gaussian")


def test_negative_elbo_sums_over_pixels_and_latents_and_weighs_kl_by_beta():
    torch.manual_seed(0)
    out = VAEOutput(torch.randn(8, 1, 28, 28), torch.randn(8, 4), torch.randn(8, 4), torch.zeros(8, 4))
    x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.5))
    loss, rec, kl = negative_elbo(out, x)
    assert torch.isclose(rec, nn.functional.binary_cross_entropy_with_logits(out.logits, x, reduction="sum") / 8)
    assert torch.isclose(loss, rec + kl)
    loss4, rec4, kl4 = negative_elbo(out, x, beta=4.0)
    assert torch.isclose(loss4, rec + 4 * kl) and rec4 == rec and kl4 == kl


def test_the_reparameterised_sample_carries_gradients_and_a_plain_sample_does_not():
    mu = torch.tensor([0.5, -1.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(4.0)], requires_grad=True)
    g = torch.Generator().manual_seed(0)
    z = reparameterise(mu, logvar, g)
    eps = torch.randn(2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z, mu + torch.tensor([1.0, 2.0]) * eps)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones(2))  # dz/dmu = 1
    assert torch.allclose(logvar.grad, 0.5 * torch.tensor([1.0, 2.0]) * eps)  # dz/dlogvar = sigma * eps / 2
    plain = torch.distributions.Normal(mu, (0.5 * logvar).exp()).sample()
    assert not plain.requires_grad  # no path back to mu and sigma
    zs = reparameterise(torch.full((200_000,), 2.0), torch.full((200_000,), math.log(9.0)))
    assert abs(zs.mean().item() - 2.0) < 0.03 and abs(zs.std().item() - 3.0) < 0.03


class _Fixed(nn.Module):
    """A decoder that ignores z (its p(x | z) = p(x) for every z) and an encoder with a fixed q."""

    def __init__(self, pixels, mu=0.0, logvar=0.0, latent=3):
        super().__init__()
        self.logits = nn.Parameter(torch.randn(pixels, generator=torch.Generator().manual_seed(0)))
        self.q = (mu, logvar)
        self.latent = latent

    def encode(self, x):
        n = len(x)
        return torch.full((n, self.latent), self.q[0]), torch.full((n, self.latent), self.q[1])

    def decode(self, z):
        return self.logits.expand(len(z), -1)


def _log_px(model, x):
    return -reconstruction_nll(model.logits.expand(len(x), -1), x.flatten(1))


def test_iwae_equals_log_px_when_the_posterior_is_exact():
    x = torch.bernoulli(torch.full((6, 10), 0.4))
    exact = _Fixed(10)  # z tells nothing about x, so p(z | x) = p(z) = N(0, I) = q: every weight is p(x)
    for k in (1, 7, 100):
        assert torch.allclose(log_likelihood(exact, x, k=k), _log_px(exact, x), atol=1e-5)


def test_iwae_closes_the_gap_that_the_elbo_leaves_when_the_posterior_is_wrong():
    x = torch.bernoulli(torch.full((50, 10), 0.4))
    off = _Fixed(10, mu=0.5, logvar=math.log(1.5))  # q != p(z | x) = N(0, I), wider: finite variance
    kl = gaussian_kl(torch.full((1, 3), 0.5), torch.full((1, 3), math.log(1.5))).item()
    g = torch.Generator().manual_seed(0)
    log_w = importance_weights(off, x, k=20_000, chunk=5_000, generator=g)
    truth = _log_px(off, x)
    elbo = log_w.mean(0)  # the mean of L_1 over many draws: ELBO = log p(x) - KL(q || p(z | x))
    assert torch.allclose(elbo, truth - kl, atol=0.03)
    # E[L_k] over disjoint groups of k samples: tighter with more samples, up to log p(x)
    bounds = [iwae_bound(log_w.reshape(k, -1)).mean().item() for k in (1, 10, 100, 20_000)]  # (k, groups x N)
    assert bounds == sorted(bounds)
    assert abs(bounds[-1] - truth.mean().item()) < 0.01 < abs(bounds[0] - truth.mean().item())


class _OneLatent(nn.Module):
    """z ~ N(0, 1), two pixels with p(x_i = 1 | z) = sigmoid(a_i z + b_i): log p(x) by quadrature."""

    a, b = torch.tensor([2.0, -1.5]), torch.tensor([0.3, 0.2])

    def encode(self, x):
        return torch.zeros(len(x), 1) + 0.2, torch.full((len(x), 1), math.log(0.8))

    def decode(self, z):
        return z * self.a + self.b


def test_iwae_reaches_a_log_likelihood_computed_by_quadrature():
    m = _OneLatent()
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float32)
    z = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    prior = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    p1 = torch.sigmoid(z[:, None] * m.a.double() + m.b.double())  # (Z, 2)
    truth = [math.log(torch.trapezoid(prior * torch.where(xi.bool(), p1, 1 - p1).prod(1), z).item())
             for xi in x.double()]
    est = log_likelihood(m, x, k=200_000, chunk=50_000, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(est, torch.tensor(truth, dtype=torch.float32), atol=0.01)
    with pytest.raises(ValueError, match="k must be a whole number of at least 1"):
        log_likelihood(m, x, k=0)


def test_active_units_count_the_latents_whose_mean_moves_with_the_image():
    class Half(nn.Module):
        def encode(self, x):
            mu = torch.zeros(len(x), 4)
            mu[:, :2] = x.flatten(1)[:, :2] * 3  # two units read the image, two never do
            return mu, torch.zeros(len(x), 4)

    n, activity = active_units(Half(), torch.rand(500, 1, 2, 2))
    assert n == 2 and activity[2:].abs().max() == 0 and (activity[:2] > 0.5).all()


@pytest.fixture
def binary_small(small_fmnist):
    return binarize(small_fmnist)


def test_binarize_fixes_the_test_images_and_draws_the_training_ones_per_batch(small_fmnist):
    a, b = binarize(small_fmnist), binarize(small_fmnist)
    assert isinstance(a, BinaryImages) and a.task == "generative"
    assert torch.equal(a.test_x, b.test_x) and set(a.test_x.unique().tolist()) <= {0, 255}
    assert not torch.equal(a.test_x, binarize(small_fmnist, seed=1).test_x)
    grey = small_fmnist.test_x.float() / 255
    assert abs((a.test_x.float() / 255).mean() - grey.mean()) < 0.01  # on with probability the grey level
    g = torch.Generator().manual_seed(0)
    (x1, y1), (x2, _) = next(a.batches("train", 64, generator=g)), next(a.batches("train", 64, generator=g))
    assert x1 is y1 and set(x1.unique().tolist()) <= {0.0, 1.0} and not torch.equal(x1, x2)  # a new draw
    fixed = binarize(small_fmnist, dynamic=False)
    g = torch.Generator().manual_seed(0)
    f1, f2 = next(fixed.batches("train", 64, generator=g))[0], next(fixed.batches("train", 64, generator=g))[0]
    assert torch.equal(f1, f2)
    with pytest.raises(ValueError, match="binary images are fed at their own size"):
        a.with_input(size=32)


def test_the_generative_task_trains_through_fit_and_reports_both_parts(binary_small, capsys):
    torch.manual_seed(0)
    model = get_model("vae", variant="paper", latent_size=8)
    hist = train.fit(model, binary_small, epochs=3, batch_size=64, lr=1e-3, weight_decay=0.0, device="cpu")
    assert hist.task == "generative" and hist.precision == "fp32"
    for key in ("train_loss", "train_reconstruction", "train_kl", "test_loss", "test_reconstruction", "test_kl"):
        assert len(hist.curves[key]) == 3, key
    assert all(math.isclose(t, r + k, rel_tol=1e-4) for t, r, k in
               zip(hist["test_loss"], hist["test_reconstruction"], hist["test_kl"], strict=True))
    assert hist["test_loss"][-1] < hist["test_loss"][0] < 543  # below a coin per pixel (784 log 2 = 543 nats)
    out = capsys.readouterr().out
    assert "test negative ELBO" in out and "nats per image" in out and "train images/s" in out
    scores = train.evaluate(model, binary_small)
    assert set(scores) == {"loss", "reconstruction", "kl"}
    assert abs(scores["loss"] - hist["test_loss"][-1]) < 3  # another draw of z: the estimate moves a little
    path = results.record("vae_test", "11", hist, summary(model, binary_small.input_shape))
    assert path is None or '"test_nelbo"' in path.read_text()
    if path is not None:
        path.unlink()


def test_the_plain_autoencoder_is_the_vae_without_the_variance_head_or_the_kl(binary_small, capsys):
    torch.manual_seed(0)
    ae, vae = get_model("vae", latent_size=2, variational=False), get_model("vae", latent_size=2)
    assert ae.logvar is None and ae.name == "AE-conv-2" and vae.name == "VAE-conv-2"
    assert count_parameters(ae) == count_parameters(vae) - _linear(256, 2)  # the same shape, no logvar head
    x = binary_small.test_x[:8].float() / 255
    out = ae(x)
    assert out.logvar is None and torch.equal(out.z, out.mu) and torch.equal(ae(x).logits, out.logits)  # no noise
    loss, rec, kl = negative_elbo(out, x)
    assert torch.equal(loss, rec) and kl == 0 and torch.allclose(rec, reconstruction_nll(out.logits, x).mean())
    with pytest.raises(ValueError, match="plain autoencoder: it has no posterior"):
        importance_weights(ae, x, k=2)
    hist = train.fit(ae, binary_small, epochs=2, batch_size=64, lr=1e-3, weight_decay=0.0, device="cpu")
    assert hist["test_kl"] == [0.0, 0.0] and hist["test_loss"] == hist["test_reconstruction"]
    assert hist["test_loss"][-1] < 543  # it learns: below a coin per pixel
    out = " ".join(capsys.readouterr().out.split())  # the lines are folded at 80 characters
    assert "a plain autoencoder: no KL, no ELBO" in out and "-ELBO" not in out


def test_beta_weighs_the_training_loss_and_held_out_data_are_scored_at_beta_one(binary_small):
    torch.manual_seed(0)
    model = get_model("vae", variant="paper", latent_size=8)
    hist = train.fit(model, binary_small, epochs=1, batch_size=64, lr=1e-3, weight_decay=0.0, device="cpu",
                     task=get_task("generative", beta=4.0))
    assert math.isclose(hist["train_loss"][0], hist["train_reconstruction"][0] + 4 * hist["train_kl"][0], rel_tol=1e-4)
    assert math.isclose(hist["test_loss"][0], hist["test_reconstruction"][0] + hist["test_kl"][0], rel_tol=1e-4)
    with pytest.raises(ValueError, match="beta must be a number of at least 0"):
        get_task("generative", beta=-1)
    with pytest.raises(ValueError, match="label_smoothing is for class labels"):
        get_task("generative", label_smoothing=0.1)


def test_mistakes_with_a_generative_task_are_caught_before_the_first_step(small_fmnist, binary_small):
    grey = BinaryImages(**{f: getattr(small_fmnist, f) for f in
                           ("name", "classes", "train_x", "train_y", "test_x", "test_y")}, dynamic=False)
    with pytest.raises(ValueError, match="binarise them .* or use loss='continuous_bernoulli'"):
        train.fit(get_model("vae"), grey, epochs=1, device="cpu")
    train.fit(get_model("vae", variant="paper", latent_size=2), grey, epochs=1, device="cpu",
              loss="continuous_bernoulli")  # grey levels have a proper likelihood there
    with pytest.raises(ValueError, match="a generative model, whose output holds logits, mu and logvar"):
        train.fit(get_model("lenet5"), binary_small, epochs=1, device="cpu")
    with pytest.raises(ValueError, match=r"models the images themselves: train it on cnn_book.data.binarize\(data\)"):
        train.fit(get_model("vae"), small_fmnist, epochs=1, device="cpu")
    assert isinstance(small_fmnist, ImageData)


def test_the_fp16_path_with_a_scaler_trains_a_vae_on_the_cpu(binary_small):
    torch.manual_seed(0)
    model = get_model("vae", variant="paper", latent_size=4)
    hist = train.fit(model, binary_small, epochs=1, batch_size=128, lr=1e-3, weight_decay=0.0, device="cpu",
                     precision="fp16")
    assert hist.precision == "fp16" and math.isfinite(hist["test_loss"][0]) and hist["test_loss"][0] < 543
