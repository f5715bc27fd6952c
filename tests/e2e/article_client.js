// Replace with your OpenClaw Gateway URL and authentication token
const OPENCLAW_GATEWAY_URL = 'wss://your-openclaw-gateway.com/websocket';
const API_TOKEN = 'your_secure_api_token'; // Or use JWT, OAuth, etc.

let socket;

function connectToOpenClaw() {
    socket = new WebSocket(OPENCLAW_GATEWAY_URL);

    // Event listener for when the connection is established
    socket.onopen = (event) => {
        console.log('Connected to OpenClaw WebSocket Gateway!', event);
        // Send initial authentication message or metadata if required
        socket.send(JSON.stringify({
            type: 'auth',
            token: API_TOKEN
        }));
    };

    // Event listener for incoming messages
    socket.onmessage = (event) => {
        const data = JSON.parse(event.data);
        // Handle different types of messages from the Gateway
        if (data.type === 'llm_response_start') {
            console.log('LLM Response Started:', data);
            // Initialize UI for streaming response
        } else if (data.type === 'llm_token') {
            console.log('Received token:', data.content);
            // Append token to UI, e.g., display in a chat window
            document.getElementById('llmOutput').innerText += data.content;
        } else if (data.type === 'llm_response_end') {
            console.log('LLM Response Ended:', data);
            // Finalize UI, clean up
        } else if (data.type === 'error') {
            console.error('Error from OpenClaw:', data.message);
        } else {
            console.log('Received:', data);
        }
    };

    // Event listener for connection errors
    socket.onerror = (error) => {
        console.error('WebSocket Error:', error);
    };

    // Event listener for when the connection is closed
    socket.onclose = (event) => {
        console.warn('Disconnected from OpenClaw WebSocket Gateway:', event);
        if (!event.wasClean) {
            console.error('Connection abruptly closed. Attempting to reconnect...');
            setTimeout(connectToOpenClaw, 3000); // Attempt to reconnect after 3 seconds
        }
    };
}

// Call to connect when the application starts
connectToOpenClaw();

function sendPrompt(promptText, modelName = 'gpt-4-turbo', maxTokens = 500) {
    if (socket && socket.readyState === WebSocket.OPEN) {
        const message = {
            type: 'llm_request',
            model: modelName,
            prompt: promptText,
            parameters: {
                max_tokens: maxTokens,
                temperature: 0.7,
                stream: true // Important for streaming responses
            },
            // Optional: for LLM routing decisions or token control
            metadata: {
                user_id: 'user123',
                priority: 'normal'
            }
        };
        socket.send(JSON.stringify(message));
        document.getElementById('llmOutput').innerText = ''; // Clear previous output
        console.log('Prompt sent:', promptText);
    } else {
        console.error('WebSocket is not open. Cannot send prompt.');
    }
}
