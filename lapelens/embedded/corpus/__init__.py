"""Build the embedded corpus from Debian packages: LibreOffice help and UI translations, and three
Debian books.

The LibreOffice help is translated paragraph by paragraph: every page exists in every language
with the same paragraph ids, which gives a monolingual corpus per language *and* an aligned
parallel set from one source (MPL-2.0). The build downloads ``libreoffice-help-*`` and
``libreoffice-l10n-*`` with ``apt-get download``, unpacks them with ``dpkg-deb -x``, extracts
``(page, paragraph id) -> text`` from the help HTML and ``(dialog, message context) -> text`` from
the UI catalogues (.mo; their msgid is the English side). The zh and ja help is mostly
untranslated, so three books translated into the paper's languages are added the same way: the
Debian Administrator's Handbook (``debian-handbook``, GPL-2.0+ or CC-BY-SA-3.0), the Debian
Reference (``debian-reference-*``, GPL-2.0+) and the Installation Guide
(``installation-guide-amd64``, GPL-2), with paragraphs aligned by their position in a page. The
result is cleaned and written to ``lapelens/data/corpus/``. Run it as
``python scripts/build_corpus.py`` or ``lapelens corpus build``; it is reproducible but not run by CI.

One module per step: ``fetch`` (the packages, apt-get and dpkg-deb), ``extract`` (text out of
HTML and .mo files), ``filter`` (which paragraphs are kept), ``write`` (train/valid split and the
files, NOTICE included) and ``build``, which runs them in that order.

Cleaning, in order, per language X and paragraph: markup stripped (the non-default cases of a
``switchinline`` and code blocks skipped; UI mnemonics and product-name placeholders resolved, UI
strings with run-time arguments dropped), whitespace collapsed, Unicode NFC; then dropped if
too short, if X != en and the text equals the English one (untranslated), if the same text was
already kept in X (duplicates: no paragraph can sit in both splits), if it is mostly symbols or,
in zh/ja/ko, half or more Latin-script names (in ja: too little kana), or if langid.py gives X
less than LANGID_MIN_PROB.
langdetect is kept out of the build so that the tests can use it as an independent check, except
for zh/ja/ko paragraphs whose letters are 30-50 % Latin, where it must agree with langid.py.
"""
