"""README's Settings table lists every setting, numbers with their defaults."""

import re

from support import REPO_ROOT

from service.settings import Settings, env_name


def test_every_setting_is_in_the_readme_with_its_default():
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(
            r"^\| `(NNSERVE_\w+)` \| ([^|]*) \|", (REPO_ROOT / "README.md").read_text(), re.M
        )
    }
    for name, field in Settings.model_fields.items():
        assert env_name(name) in rows, f"{env_name(name)} is not in README's Settings table"
        default = field.default
        if isinstance(default, int | float) and not isinstance(default, bool):
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert rows[env_name(name)] == f"`{shown}`", env_name(name)
