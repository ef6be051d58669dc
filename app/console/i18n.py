"""Languages and formats: gettext catalogues compiled by `make messages`, Babel's formats."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from gettext import NullTranslations
from importlib.resources import files
from pathlib import Path

from babel import Locale as BabelLocale
from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_currency, format_decimal, format_percent
from babel.support import Translations

DOMAIN = "messages"


class Language(StrEnum):
    """The console's languages (English is the source text)."""

    EN = "en"
    ZH_CN = "zh_CN"


def translations_dir() -> Path:
    """The folder of the compiled catalogues inside the package."""
    return Path(str(files("app.console") / "translations"))


def load_translations(language: Language) -> NullTranslations:
    """The catalogue of one language (English needs none: it is the source)."""
    if language is Language.EN:
        return NullTranslations()
    return Translations.load(translations_dir(), [language.value], DOMAIN)


class Formats:
    """Numbers, money, dates and durations in one language's conventions."""

    def __init__(self, language: Language, currency: str) -> None:
        self.locale = BabelLocale.parse(language.value)
        self.currency = currency

    def money(self, amount: float) -> str:
        """An amount in the configured currency: €1,234.50 or ¥1,234.50."""
        return str(format_currency(amount, self.currency, locale=self.locale))

    def number(self, value: float) -> str:
        """A number with the locale's grouping and decimal sign."""
        return str(format_decimal(value, locale=self.locale))

    def percent(self, value: float) -> str:
        """A fraction as a percentage."""
        return str(format_percent(value, format="#,##0.0%", locale=self.locale))

    def when(self, value: datetime) -> str:
        """A date and time, medium length."""
        return str(format_datetime(value, format="medium", locale=self.locale))

    def duration(self, delta: timedelta) -> str:
        """A signed duration in words: 'in 3 days' or '2 hours ago'."""
        return str(format_timedelta(delta, add_direction=True, threshold=1.0, locale=self.locale))
