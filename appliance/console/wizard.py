"""The setup wizard's own words: the first settings file it writes, and the settings' problems
said as its fields name them."""

from __future__ import annotations


def new_settings(domain: str, hostname: str, address: str, password_hash: str) -> str:
    """The first settings file, commented like the one on the card, via tomlkit."""
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment("Written by the setup wizard. The console and `appliance` edit this "
                            "file; you may too (then `appliance apply`)."))
    doc.add(tomlkit.comment("Every setting: `appliance settings-reference`."))
    doc.add("domain", tomlkit.item(domain))
    doc.add("hostname", tomlkit.item(hostname))
    users = tomlkit.aot()
    users.append(tomlkit.table().add("address", address).add("password_hash", password_hash))
    doc.add("users", users)
    return tomlkit.dumps(doc)


def wizard_problems(problems: list[str]) -> str:
    """The settings' problems as the wizard's fields name them. A bad domain also makes the
    derived host name and address bad: only the domain is worth saying then."""
    if any(p.startswith("domain:") for p in problems):
        problems = [p for p in problems if not p.startswith(("hostname: \"mail.", "users[0]"))]
    return "; ".join(p.replace("users[0].address", "your address") for p in problems)
