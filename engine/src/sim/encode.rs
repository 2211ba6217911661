//! SBE frames and Binance JSON payloads for simulator events (being written).
