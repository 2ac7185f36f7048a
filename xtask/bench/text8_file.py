"""The corpus bytes of a text8-form file, for the reference scripts beside
this one: the single member of a zip, or a plain file read whole."""
import zipfile


def read_text8(path):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return z.read(z.namelist()[0])
    with open(path, "rb") as f:
        return f.read()
