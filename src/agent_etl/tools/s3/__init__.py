"""What the s3 extractor and loader share.

- ``url``: ``s3://bucket/prefix/glob`` parsed, and which keys a glob matches;
- ``options``: the connection options of both tools (``endpoint_url``, ``region``, ``profile``),
  and the rule that access keys never appear in a spec;
- ``client``: one boto3 client and one ``pyarrow.fs.S3FileSystem`` per endpoint and run, both on
  the credentials of the standard AWS chain, and the translation of S3 errors into messages;
- ``listing``: the objects a URL names, in key order;
- ``objects``: an S3 object as a ``StoredFile`` for the file readers, small ones fetched whole and
  several at once;
- ``upload``: a writable stream that uploads the parts of one multipart upload, completed only at
  the commit;
- ``output``: the staged output of a load and its commit with a manifest;
- ``hive``: the ``name=value`` folders of a key as partition columns.

Every module but ``url`` and ``options`` imports boto3 or pyarrow.fs: import them from the tools.
"""
