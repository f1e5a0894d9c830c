"""The wire formats clients speak, each converted to and from one internal form.

The internal form is OpenAI's chat completions: a request body, a completion,
and a stream of completion chunks, which every provider adapter takes and
gives. A format module converts its API's requests to that form and the
answers from it (and, for a provider that speaks the format natively, the
other way), so that n formats need n modules, not n² converters.
"""
