"""Security: MACs, keys, PIN blocks and DUKPT as pure functions over bytes.

Nothing in this package imports the rest of iso-host, does I/O, logs or reads the clock; the
only outside input is ``os.urandom`` for fresh keys and PIN block fill. Key material, PINs and
PANs never appear in an error message.
"""

from iso_host.security.dukpt import derive_ipek, derive_transaction_key, mac_request_key, mac_response_key, pin_key
from iso_host.security.errors import KeyLengthError, PinBlockError, SecurityError
from iso_host.security.keys import (
    CUP_KEY_BLOCK_LAYOUTS,
    CupWorkingKeys,
    aes_key_check_value,
    build_cup_key_block,
    build_iso87_key_block,
    generate_des_key,
    key_check_value,
    parse_cup_key_block,
    parse_iso87_key_block,
    unwrap_key,
    wrap_key,
)
from iso_host.security.mac import (
    MAC_ALGORITHMS,
    aes_cmac,
    compute_mac,
    cup_ecb_mac,
    verify_mac,
    x9_9_mac,
    x9_19_mac,
)
from iso_host.security.pin import decode_pin_block, decrypt_pin_block, encode_pin_block, encrypt_pin_block

__all__ = [
    "CUP_KEY_BLOCK_LAYOUTS",
    "MAC_ALGORITHMS",
    "CupWorkingKeys",
    "KeyLengthError",
    "PinBlockError",
    "SecurityError",
    "aes_cmac",
    "aes_key_check_value",
    "build_cup_key_block",
    "build_iso87_key_block",
    "compute_mac",
    "cup_ecb_mac",
    "decode_pin_block",
    "decrypt_pin_block",
    "derive_ipek",
    "derive_transaction_key",
    "encode_pin_block",
    "encrypt_pin_block",
    "generate_des_key",
    "key_check_value",
    "mac_request_key",
    "mac_response_key",
    "parse_cup_key_block",
    "parse_iso87_key_block",
    "pin_key",
    "unwrap_key",
    "verify_mac",
    "wrap_key",
    "x9_9_mac",
    "x9_19_mac",
]
