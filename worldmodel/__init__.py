"""Genie-style generative world model (Bruce et al. 2024, arXiv 2402.15391) trained on the toolkit's
video: :mod:`worldmodel.tokenizer` (frames ↔ FSQ token grids), the toolkit's LAM with a small
codebook for latent actions, :mod:`worldmodel.dynamics` (MaskGIT over tokens on an
:mod:`worldmodel.st` ST-transformer), :mod:`worldmodel.model` (loading, prompting, the generation
loop), :mod:`worldmodel.evaluate` (PSNR vs copy-last, ΔtPSNR, action recovery),
:mod:`worldmodel.dream` (a latent policy acting in imagination), :mod:`worldmodel.pipeline`
(``lapo wm train``). Heavy imports happen in the functions that need them."""
