"""The API document's examples, written down as test data: what each one sends, as it sends it.

Each example keeps the document's own request body, path and client code; only the address and
the token differ (the document's own rule). The section names are the document's headings, so a
failure reads as "this part of the contract does not hold".
"""

from __future__ import annotations

from typing import Any

# -- AI Model APIs --------------------------------------------------------------------------------
CHAT_SECTION = "AI Model APIs / Llama 3 Chat Completions"
CHAT_REQUEST: dict[str, Any] = {
    "model": "llama-3-chat",
    "messages": [
        {"role": "system", "content": "You are a helpful AI assistant."},
        {"role": "user", "content": "Explain quantum computing in simple terms."},
    ],
    "max_tokens": 1000,
    "temperature": 0.7,
    "stream": False,
}
CHAT_CURL_REQUEST: dict[str, Any] = {
    "model": "llama-3-chat",
    "messages": [{"role": "user", "content": "Hello, world!"}],
    "max_tokens": 100,
}

INSTRUCT_SECTION = "AI Model APIs / Llama 3 Instruct Completions"
INSTRUCT_REQUEST: dict[str, Any] = {
    "model": "llama-3-instruct",
    "prompt": "Write a Python function to calculate fibonacci numbers:",
    "max_tokens": 500,
    "temperature": 0.3,
    "stop": ["\n\n"],
    "suffix": "",
}

EMBEDDINGS_SECTION = "AI Model APIs / Embedding Generation"
EMBEDDINGS_PATH = "/api/embeddings"
EMBEDDINGS_REQUEST: dict[str, Any] = {
    "model": "llama-3-embeddings",
    "input": [
        "The quick brown fox jumps over the lazy dog",
        "Machine learning is a subset of artificial intelligence",
    ],
}

# -- Data Management APIs -------------------------------------------------------------------------
POSTGRES_SECTION = "Data Management APIs / PostgreSQL Database"
SCHEMAS = ["ai_models", "embeddings", "users", "experiments", "monitoring"]
# Verbatim from the API document (its "SELECT " lines end with a space); tests/verify uses them too.
PERFORMANCE_QUERY = (
    "SELECT "
    + """
    model_name,
    avg_inference_time_ms,
    total_requests,
    success_rate
FROM ai_models.performance_metrics
WHERE created_at >= NOW() - INTERVAL '24 hours';"""
)
SIMILARITY_QUERY = (
    "SELECT "
    + """
    doc_id,
    similarity_score
FROM embeddings.document_vectors
WHERE vector <-> $1 < 0.3
ORDER BY vector <-> $1
LIMIT 10;"""
)

REDIS_SECTION = "Data Management APIs / Redis Cache"
REDIS_COMMANDS: list[list[str]] = [
    ["SET", "llama:chat:12345", '{"response": "Hello world", "tokens": 2}', "EX", "3600"],
    ["GET", "llama:chat:12345"],
    [
        *("HSET", "session:user123", "last_seen", "2025-07-28T10:30:00Z"),
        *("model_preference", "llama-3-chat"),
    ],
    ["HGETALL", "session:user123"],
]

# -- Infrastructure APIs --------------------------------------------------------------------------
HEALTH_SECTION = "Infrastructure APIs / API Gateway / Health Check"
HEALTH_SERVICES = ["llama_chat", "llama_instruct", "embeddings", "vector_db", "database"]
STATUS_SECTION = "Infrastructure APIs / API Gateway / Service Status"

# -- Monitoring APIs ------------------------------------------------------------------------------
PROMETHEUS_SECTION = "Monitoring APIs / Prometheus Metrics"
PROMETHEUS_QUERIES = [
    "ai_inference_duration_seconds",
    "nvidia_gpu_utilization_percentage",
    "rate(http_requests_total[5m])",
]

# -- Error Handling / Rate Limiting ---------------------------------------------------------------
ERRORS_SECTION = "Error Handling / Standard Error Format"
RATE_LIMIT_SECTION = "Rate Limiting / Handling Rate Limits"
RATE_LIMIT_HEADERS = [
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
]

# The document's helper, unchanged.
RATE_LIMIT_HELPER = """
import time
import requests

def api_request_with_retry(url, data, headers, max_retries=3):
    for attempt in range(max_retries):
        response = requests.post(url, json=data, headers=headers)

        if response.status_code == 429:
            retry_after = int(response.headers.get('X-RateLimit-Retry-After', 60))
            time.sleep(retry_after)
            continue

        return response

    raise Exception("Max retries exceeded")
"""

# -- SDK Examples ---------------------------------------------------------------------------------
PYTHON_SDK_SECTION = "SDK Examples / Python SDK"
# The document's class, unchanged but for trailing spaces (tests always pass a base_url).
PYTHON_SDK = '''
import openai
from typing import List, Dict, Any

class CXInfrastructureClient:
    def __init__(self, api_key: str, base_url: str = "http://192.168.10.39:8000"):
        self.client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url
        )

    def chat_completion(
        self,
        messages: List[Dict[str, str]],
        model: str = "llama-3-chat",
        **kwargs
    ) -> Dict[str, Any]:
        """Generate chat completion using Llama 3 Chat model."""
        return self.client.chat.completions.create(
            model=model,
            messages=messages,
            **kwargs
        )

    def text_completion(
        self,
        prompt: str,
        model: str = "llama-3-instruct",
        **kwargs
    ) -> Dict[str, Any]:
        """Generate text completion using Llama 3 Instruct model."""
        return self.client.completions.create(
            model=model,
            prompt=prompt,
            **kwargs
        )

    def create_embedding(
        self,
        texts: List[str],
        model: str = "llama-3-embeddings"
    ) -> List[List[float]]:
        """Generate embeddings for text inputs."""
        response = self.client.embeddings.create(
            model=model,
            input=texts
        )
        return [item.embedding for item in response.data]
'''

JS_SDK_SECTION = "SDK Examples / JavaScript SDK"
# The document's class and usage, unchanged but for the token and base URL (argv).
JS_SDK = r"""
class CXInfrastructureClient {
    constructor(apiKey, baseUrl = 'http://192.168.10.39:8000') {
        this.apiKey = apiKey;
        this.baseUrl = baseUrl;
    }

    async chatCompletion(messages, model = 'llama-3-chat', options = {}) {
        const response = await fetch(`${this.baseUrl}/v1/chat/completions`, {
            method: 'POST',
            headers: {
                'Authorization': `Bearer ${this.apiKey}`,
                'Content-Type': 'application/json'
            },
            body: JSON.stringify({
                model,
                messages,
                ...options
            })
        });

        return response.json();
    }

    async textCompletion(prompt, model = 'llama-3-instruct', options = {}) {
        const response = await fetch(`${this.baseUrl}/v1/completions`, {
            method: 'POST',
            headers: {
                'Authorization': `Bearer ${this.apiKey}`,
                'Content-Type': 'application/json'
            },
            body: JSON.stringify({
                model,
                prompt,
                ...options
            })
        });

        return response.json();
    }
}

(async () => {
    const [token, baseUrl] = process.argv.slice(2);
    const client = new CXInfrastructureClient(token, baseUrl);

    // Chat completion
    const chatResponse = await client.chatCompletion([
        { role: 'user', content: 'Hello, world!' }
    ], 'llama-3-chat', { max_tokens: 32 });
    console.log(JSON.stringify({ chat: chatResponse.choices[0].message.content }));

    const textResponse = await client.textCompletion('def fibonacci(n):', 'llama-3-instruct',
                                                     { max_tokens: 32 });
    console.log(JSON.stringify({ text: textResponse.choices[0].text }));
})().catch((err) => { console.error(err); process.exit(1); });
"""

CURL_SECTION = "SDK Examples / curl Examples"
STREAM_REQUEST: dict[str, Any] = {
    "model": "llama-3-chat",
    "messages": [{"role": "user", "content": "Write a haiku about AI"}],
    "stream": True,
    "max_tokens": 100,
}

QDRANT_SECTION = "Data Management APIs / Vector Database (Qdrant)"
