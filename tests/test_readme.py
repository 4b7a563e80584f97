"""The README's worked examples must keep working."""
import torch

from cbdm.config import variant_settings
from cbdm.diffusion import NoiseSchedule
from cbdm.networks import build_unet
from cbdm.objective import Objective

from helpers import TINY_NETWORK, minimal_config, readme_blocks


def test_the_add_a_loss_example_registers_and_trains(repo, loss_registry):
    snippet = next(b for b in readme_blocks(repo, "python") if "register_loss(" in b)
    namespace = {}
    exec("import torch\nfrom cbdm.losses import register_loss, pixel_mean\n" + snippet, namespace)
    assert "min_snr_mse" in loss_registry
    config = minimal_config(variants={"minsnr": {"losses": [{"name": "min_snr_mse", "max_snr": 5.0}]}})
    terms = variant_settings(config, "minsnr")["losses"]
    model = build_unet({**TINY_NETWORK, "channel_mult": [1]}, image_channels=1, image_size=8, num_classes=10,
                       num_timesteps=50)
    objective = Objective(terms, NoiseSchedule.linear(50, 1e-4, 0.02), torch.full((10,), 0.1),
                          model.null_label, {"policy": "batch", "probability": 0.0}, True)
    loss, parts = objective(model, torch.randn(4, 1, 8, 8), torch.arange(4), torch.Generator(), torch.Generator())
    loss.backward()
    assert set(parts) == {"min_snr_mse"} and torch.isfinite(loss)


def test_the_variant_example_validates(repo):
    import yaml

    block = next(b for b in readme_blocks(repo, "yaml") if "cbdm_uniform_b48" in b)
    config = minimal_config(**yaml.safe_load(block))
    settings = variant_settings(config, "cbdm_uniform_b48")
    assert settings["training"]["batch_size"] == 48 and settings["guidance"] == [1.0, 1.6]


def test_every_documented_snakemake_command_gives_configfile_only_config_files(repo):
    """Snakemake's --configfile takes every word up to the next option: `snakemake --configfile
    c.yaml all`, as the SLURM and Kubernetes profiles and the README's cluster section wrote it,
    stops at once with a traceback ending "No such file or directory: 'all'"."""
    import re

    files = [repo / "README.md", repo / "Snakefile", *repo.glob("config/**/*.yaml"), *repo.glob("config/**/*.md"),
             *repo.glob("profiles/**/*.yaml")]
    wrong = []
    for file in files:
        for command in re.findall(r"snakemake [^`\n]*--configfile[^`\n]*", file.read_text()):
            words = command.split("--configfile", 1)[1].split()
            given = words[:next((i for i, w in enumerate(words) if w.startswith("-")), len(words))]
            wrong += [f"{file.relative_to(repo)}: {command}" for w in given
                      if not re.fullmatch(r"[\w./<>-]*(\.ya?ml\]?|\.json|\.\.\.|>|\\)|\[?", w)]
    assert not wrong, wrong
