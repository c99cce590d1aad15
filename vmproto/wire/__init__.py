"""Sans-IO core of the VoIPmonitor client/server channel (spec/): bytes in, events out.

Nothing in this package opens sockets, imports trio, or reads the clock.

The codec layer is re-exported here; the connection state machines live in their own modules.
"""

from .compression import Compression, PbCompression, compress, decompress, detect, pb_compress, pb_decompress
from .crypto import (
    AesBlockCipher,
    AesStreamDecryptor,
    AesStreamEncryptor,
    ManagerAesKey,
    ManagerReplyEncryptor,
    generate_aes_strings,
    generate_rsa_key,
    public_key_pem,
    rsa_decrypt,
    rsa_encrypt,
    unwrap_manager_request,
    wrap_manager_request,
)
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .framing import (
    BLOCK_MAGIC,
    HEADER_SIZE,
    BlockHeader,
    BlockReader,
    byte_sum,
    encode_block,
    verify_checksum,
)
from .opening import CONNECTION_TYPES, Opening, OpeningReader, encode_opening

__all__ = [
    "BLOCK_MAGIC",
    "CONNECTION_TYPES",
    "HEADER_SIZE",
    "AesBlockCipher",
    "AesStreamDecryptor",
    "AesStreamEncryptor",
    "BlockHeader",
    "BlockReader",
    "Compression",
    "LocalProtocolError",
    "ManagerAesKey",
    "ManagerReplyEncryptor",
    "Opening",
    "OpeningReader",
    "PbCompression",
    "ProtocolError",
    "RemoteProtocolError",
    "byte_sum",
    "compress",
    "decompress",
    "detect",
    "encode_block",
    "encode_opening",
    "generate_aes_strings",
    "generate_rsa_key",
    "pb_compress",
    "pb_decompress",
    "public_key_pem",
    "rsa_decrypt",
    "rsa_encrypt",
    "unwrap_manager_request",
    "verify_checksum",
    "wrap_manager_request",
]
