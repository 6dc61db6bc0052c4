// Bundled by esbuild (tests/files/test_browser.py) as an app would bundle Uppy.
import Uppy from '@uppy/core'
import Tus from '@uppy/tus'

window.Uppy = Uppy
window.UppyTus = Tus
