"""Project files: tus uploads, encrypted storage, listing, trash, downloads and upload links."""
