"""Built-in explanation methods, registered through the same hook as third-party ones.

One module per method; this plugin module itself imports none of them (nor torch) until the
methods are asked for, so loading the plugins stays cheap.

It may import the foundation, the engine, the registry and data; not metrics, nor inference (the
explainer uses methods, not the other way round).
"""

from __future__ import annotations

from rtsal.registry.hookspecs import hookimpl


@hookimpl
def register_methods(register):
    from rtsal.methods.baselines import CentreBoxMethod, MaxBoxMethod
    from rtsal.methods.contrast import ContrastMethod
    from rtsal.methods.gradcam import GradCAMMethod
    from rtsal.methods.gradient import GradientMethod
    from rtsal.methods.guided import GuidedBackpropMethod
    from rtsal.methods.iterative import IterativeMaskMethod
    from rtsal.methods.masker import MaskingModelMethod

    register("masker", MaskingModelMethod, summary="real-time masking model (this paper)")
    register("centre-box", CentreBoxMethod, summary="centred box of half the image area")
    register("max-box", MaxBoxMethod, summary="the whole image")
    register("gradient", GradientMethod, summary="|d logit / d image| (Simonyan et al. 2014)")
    register("gradcam", GradCAMMethod, summary="Grad-CAM (Selvaraju et al. 2017)")
    register(
        "guided-backprop",
        GuidedBackpropMethod,
        summary="guided backpropagation (Springenberg et al. 2015)",
    )
    register(
        "iterative-mask",
        IterativeMaskMethod,
        summary="mask optimised per image on Eq. 4 (Fong & Vedaldi 2017 style)",
    )
    register(
        "contrast",
        ContrastMethod,
        summary="input descent + superpixel/colour-contrast refinement (Pan et al. 2015)",
    )
