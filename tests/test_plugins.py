"""The plugin system: every hook spec is documented and has a test named after it; real
entry-point discovery, broken plugins, the allow-list and the autoload switch."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest
import torch
from torch import nn

import rtsal
from rtsal import hookimpl
from rtsal.errors import UnknownBlackBoxError
from rtsal.registry import hookspecs
from rtsal.registry.blackbox import create_black_box, list_black_boxes
from rtsal.registry.plugins import PluginWarning, make_plugin_manager, reset_plugin_manager
from tests.helpers import REPO, run_rtsal

HOOKS = sorted(
    name
    for name, fn in vars(hookspecs).items()
    if callable(fn) and getattr(fn, "rtsal_spec", None) is not None
)


@pytest.fixture
def plugin_manager():
    """A manager with only the built-in plugins; restored afterwards."""
    pm = make_plugin_manager(load_entry_points=False)
    reset_plugin_manager(pm)
    yield pm
    reset_plugin_manager(None)


def _tiny_box(name: str) -> rtsal.BlackBox:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    return rtsal.BlackBox(
        net,
        name=name,
        class_names=["yes", "no"],
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        input_size=(8, 8),
    )


def test_every_hook_is_documented_and_tested():
    assert set(HOOKS) == {
        "register_black_boxes",
        "register_black_box_providers",
        "register_methods",
        "register_commands",
    }
    this_module = sys.modules[__name__]
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 40, f"hook {name} is not documented"
        assert callable(getattr(this_module, f"test_{name}", None)), f"no test_{name}"


def test_register_black_boxes(plugin_manager):
    class Plugin:
        @hookimpl
        def register_black_boxes(self, register):
            register(
                "tiny",
                lambda **kw: _tiny_box("tiny"),
                aliases=("TinyNet",),
                summary="two classes",
                input_size=(8, 8),
                num_classes=2,
            )

    plugin_manager.register(Plugin(), name="tiny-plugin")
    reset_plugin_manager(plugin_manager)
    assert create_black_box("tinynet").name == "tiny"  # alias, case-insensitive
    rows = [r for r in list_black_boxes("tiny") if r.name == "tiny"]
    assert rows and rows[0].plugin == "tiny-plugin" and rows[0].num_classes == 2


def test_register_black_box_providers(plugin_manager):
    class ToyProvider:
        prefix = "toy"

        def claims(self, name):
            return name.startswith("toy-")

        def create(self, name, **options):
            return _tiny_box(f"toy:{name}")

        def names(self, pattern):
            return ["a", "b"]

    class Plugin:
        @hookimpl
        def register_black_box_providers(self, register):
            register(ToyProvider())

    plugin_manager.register(Plugin(), name="toy-plugin")
    reset_plugin_manager(plugin_manager)
    assert create_black_box("toy:anything").name == "toy:anything"
    assert create_black_box("toy-x").name == "toy:toy-x"  # claimed without a prefix
    listed = {r.name: r.plugin for r in list_black_boxes("*", include_providers=True)}
    assert listed["toy:a"] == "toy-plugin"  # a provider without listings() still lists


def test_register_methods(plugin_manager):
    from rtsal.registry.methods import create_method, list_methods

    class Ones:
        def __init__(self, black_box, **options):
            self.black_box = black_box

        def explain(self, images, classes):
            return torch.ones(images.shape[0], 1, *images.shape[-2:])

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register("ones", Ones, summary="everything matters")

    plugin_manager.register(Plugin(), name="ones-plugin")
    reset_plugin_manager(plugin_manager)
    assert "ones" in {m.name for m in list_methods()}
    method = create_method("ones", _tiny_box("t"))
    assert method.explain(torch.rand(2, 3, 8, 8), torch.tensor([0, 1])).shape == (2, 1, 8, 8)
    with pytest.raises(KeyError, match="did you mean 'ones'"):
        create_method("onez", _tiny_box("t"))


def test_a_raising_hook_warns_and_the_rest_still_works(plugin_manager):
    """Fail-soft hooks: a plugin whose hooks raise (or register junk) is skipped with a warning
    naming it; every other black box and method is still found."""
    from rtsal.registry.methods import create_method, list_methods

    class Broken:
        @hookimpl
        def register_black_boxes(self, register):
            register("half-registered", lambda **kw: _tiny_box("half-registered"))
            raise RuntimeError("black boxes are broken")

        @hookimpl
        def register_black_box_providers(self, register):
            register(object())  # not a provider: this registration is refused

        @hookimpl
        def register_methods(self, register):
            raise RuntimeError("methods are broken")

    plugin_manager.register(Broken(), name="broken-hooks")
    reset_plugin_manager(plugin_manager)
    with pytest.warns(PluginWarning) as caught:
        box = create_black_box("resnet18", pretrained=False)
        methods = {m.name for m in list_methods()}
    messages = [str(w.message) for w in caught]
    assert any("'broken-hooks'" in m and "black boxes are broken" in m for m in messages)
    assert any("'broken-hooks'" in m and "has no 'prefix'" in m for m in messages)
    assert any("'broken-hooks'" in m and "methods are broken" in m for m in messages)
    assert box.name == "timm:resnet18"
    assert not any(r.name == "half-registered" for r in list_black_boxes("half"))  # all or none
    assert {"masker", "gradcam", "centre-box"} <= methods
    mask = create_method("centre-box", box).explain(torch.rand(1, 3, 8, 8), torch.tensor([0]))
    assert mask.shape == (1, 1, 8, 8)


def test_registries_are_built_once_per_manager(plugin_manager):
    from rtsal.registry import blackbox, methods

    calls = []

    class Counting:
        @hookimpl
        def register_methods(self, register):
            calls.append("methods")

        @hookimpl
        def register_black_boxes(self, register):
            calls.append("black boxes")

    plugin_manager.register(Counting(), name="counting")
    reset_plugin_manager(plugin_manager)
    for _ in range(3):
        methods.list_methods()
        methods.create_method("max-box", None)
        blackbox.is_black_box("nothing-by-this-name")
    assert sorted(calls) == ["black boxes", "methods"]
    reset_plugin_manager(plugin_manager)  # a reset rebuilds them
    methods.list_methods()
    assert calls.count("methods") == 2


def _install(target: Path, package: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(package),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


def test_register_commands(tmp_path):
    """The template plugin, really installed, adds `rtsal hello-template` and a black box."""
    _install(tmp_path, REPO / "examples" / "rtsal-plugin-template")
    env = {"PYTHONPATH": str(tmp_path), "RTSAL_DISABLE_PLUGIN_AUTOLOAD": ""}
    run = run_rtsal("hello-template", env=env)
    assert run.code == 0, run.stderr
    assert "template" in run.stdout.lower()
    run = run_rtsal("--help", env=env)  # the command list has the plugin's command too
    assert run.code == 0, run.stderr
    assert "hello-template" in run.stdout and "explain" in run.stdout
    run = run_rtsal("blackboxes", "template", "--json", env=env)
    assert run.code == 0, run.stderr
    assert "template-tinynet" in run.stdout
    # the allow-list keeps it out; so does the autoload switch
    run = run_rtsal("hello-template", env={**env, "RTSAL_PLUGINS": "efficientnet-lite"})
    assert run.code != 0
    run = run_rtsal("hello-template", env={**env, "RTSAL_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert run.code != 0


def _fake_distribution(site: Path, dist: str, module: str, source: str) -> None:
    """An installed distribution, as pip lays it out, whose entry point names ``module``."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[rtsal]\n{dist} = {module}\n")


def test_broken_plugin_warns_and_the_rest_still_works(tmp_path):
    _fake_distribution(
        tmp_path, "rtsal-broken", "rtsal_broken", "raise RuntimeError('this plugin is broken')\n"
    )
    _fake_distribution(
        tmp_path,
        "rtsal-misspelled",
        "rtsal_misspelled",
        """
        import rtsal

        @rtsal.hookimpl
        def register_blackboxes(register):
            pass
    """,
    )
    _fake_distribution(
        tmp_path,
        "rtsal-raising",
        "rtsal_raising",
        """
        import rtsal

        @rtsal.hookimpl
        def register_black_boxes(register):
            raise RuntimeError('this hook is broken')
    """,
    )
    env = {"PYTHONPATH": str(tmp_path), "RTSAL_DISABLE_PLUGIN_AUTOLOAD": ""}
    run = run_rtsal("blackboxes", "--json", env=env)
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "plugin 'rtsal-broken'" in run.stderr and "this plugin is broken" in run.stderr
    assert "plugin 'rtsal-misspelled'" in run.stderr and "register_blackboxes" in run.stderr
    assert "plugin 'rtsal-raising'" in run.stderr and "this hook is broken" in run.stderr
    assert "efficientnet_lite0" in run.stdout  # the good plugin still loaded


def test_autoload_switch_and_allow_list(monkeypatch):
    pytest.importorskip("rtsal_efficientnet_lite")
    monkeypatch.setenv("RTSAL_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager(None)
    with pytest.raises(UnknownBlackBoxError):
        create_black_box("lite0")
    monkeypatch.setenv("RTSAL_DISABLE_PLUGIN_AUTOLOAD", "")
    monkeypatch.setenv("RTSAL_PLUGINS", "something-else")
    reset_plugin_manager(None)
    assert not list_black_boxes("lite0", include_providers=False)
    monkeypatch.setenv("RTSAL_PLUGINS", "efficientnet-lite")
    reset_plugin_manager(None)
    assert [r.plugin for r in list_black_boxes("lite0", include_providers=False)] == [
        "efficientnet-lite"
    ]
    reset_plugin_manager(None)


def test_builtin_providers_are_plugins():
    pm = make_plugin_manager(load_entry_points=False)
    names = {name for name, _ in pm.list_name_plugin()}
    assert {"builtin:timm", "builtin:user-code", "builtin:checkpoints", "builtin:methods"} <= names
    assert isinstance(pm, pluggy.PluginManager)
