// Drives tus-js-client and Uppy for tests/files/test_browser.py. Every request and response
// is logged in window.log so that the test can check what the client really sent.
window.log = []

function picked () {
  return document.getElementById('file').files[0]
}

function logged (options) {
  return {
    ...options,
    onBeforeRequest (req) {
      window.log.push({
        phase: 'request',
        method: req.getMethod(),
        url: req.getURL(),
        offset: req.getHeader('Upload-Offset') ?? null,
        length: req.getHeader('Upload-Length') ?? null,
        defer: req.getHeader('Upload-Defer-Length') ?? null,
        concat: req.getHeader('Upload-Concat') ?? null,
      })
    },
    onAfterResponse (req, res) {
      window.log.push({
        phase: 'response',
        method: req.getMethod(),
        url: req.getURL(),
        status: res.getStatus(),
        offset: res.getHeader('Upload-Offset') ?? null,
      })
    },
  }
}

function failure (error) {
  const res = error.originalResponse
  return res ? `${error.message} [${res.getStatus()}] ${res.getBody()}` : String(error)
}

// A whole upload; resolves with the upload URL.
window.tusUpload = (options) => new Promise((resolve, reject) => {
  const upload = new tus.Upload(picked(), logged({
    ...options,
    onSuccess: () => resolve(upload.url),
    onError: (error) => reject(new Error(failure(error))),
  }))
  upload.start()
})

// Starts an upload and aborts it (mid-request if the browser reports progress in time)
// once more than `stopAfter` bytes were sent; resolves with the upload URL.
window.tusUploadAborted = (options, stopAfter) => new Promise((resolve, reject) => {
  let stopped = false
  const upload = new tus.Upload(picked(), logged({
    ...options,
    onProgress: (sent) => {
      if (!stopped && sent > stopAfter) {
        stopped = true
        upload.abort()
        resolve(upload.url)
      }
    },
    onSuccess: () => reject(new Error('the upload finished before it was aborted')),
    onError: (error) => reject(new Error(failure(error))),
  }))
  upload.start()
})

// Uppy with its Tus plugin; resolves with the upload URL.
window.uppyUpload = async (options, relativePath) => {
  const file = picked()
  const uppy = new window.Uppy({ autoProceed: false }).use(window.UppyTus, options)
  uppy.addFile({ name: file.name, type: file.type, data: file, meta: { relativePath } })
  const result = await uppy.upload()
  if (result.failed.length > 0) {
    throw new Error(result.failed.map((f) => String(f.error)).join('; '))
  }
  return result.successful[0].uploadURL
}
