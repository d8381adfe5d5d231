import subprocess
import sys

import nbhelpers


def test_import_stays_light():
    code = ("import sys, nbhelpers; nbhelpers.get_model; nbhelpers.plan_deployment; "
            "heavy = [m for m in ('google.cloud.aiplatform', 'openai', 'papermill', "
            "'ipywidgets') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_public_api_resolves_to_functions_not_modules():
    for name in nbhelpers.__all__:
        value = getattr(nbhelpers, name)
        assert not isinstance(value, type(nbhelpers)), name
    assert callable(nbhelpers.deploy) and callable(nbhelpers.cleanup)
